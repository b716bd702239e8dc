//! Random operation sequences against every engine, checked against a plain `Vec<u8>` model.

use proptest::prelude::*;
use rustio_backstore::{Backstore, FileBackstore, FileOptions, RamBackstore, WriteFlags};

const CAP: u64 = 1 << 20;
const BS: u64 = 512;

#[derive(Debug, Clone)]
enum Op {
    Write {
        block: u64,
        blocks: u64,
        seed: u8,
        fua: bool,
    },
    Discard {
        block: u64,
        blocks: u64,
    },
    Zero {
        block: u64,
        blocks: u64,
        unmap: bool,
    },
    Read {
        block: u64,
        blocks: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let nblocks = CAP / BS;
    // Ranges may run past the end on purpose: the engine must refuse them and change nothing.
    let range = (0..nblocks + 4, 0u64..300);
    prop_oneof![
        (range.clone(), any::<u8>(), any::<bool>()).prop_map(|((block, blocks), seed, fua)| {
            Op::Write {
                block,
                blocks,
                seed,
                fua,
            }
        }),
        range
            .clone()
            .prop_map(|(block, blocks)| Op::Discard { block, blocks }),
        (range.clone(), any::<bool>()).prop_map(|((block, blocks), unmap)| Op::Zero {
            block,
            blocks,
            unmap
        }),
        range.prop_map(|(block, blocks)| Op::Read { block, blocks }),
    ]
}

fn in_range(block: u64, blocks: u64) -> bool {
    (block + blocks) * BS <= CAP
}

fn check(b: &dyn Backstore, ops: &[Op]) {
    let mut model = vec![0u8; CAP as usize];
    for op in ops {
        match *op {
            Op::Write {
                block,
                blocks,
                seed,
                fua,
            } => {
                let data: Vec<u8> = (0..blocks * BS)
                    .map(|i| seed.wrapping_add(i as u8))
                    .collect();
                let r = b.write_at(&data, block * BS, WriteFlags { fua });
                if in_range(block, blocks) {
                    r.unwrap();
                    model[(block * BS) as usize..((block + blocks) * BS) as usize]
                        .copy_from_slice(&data);
                } else {
                    assert!(r.is_err(), "out-of-range write accepted: {op:?}");
                }
            }
            Op::Discard { block, blocks } | Op::Zero { block, blocks, .. } => {
                let r = match *op {
                    Op::Discard { .. } => b.discard(block * BS, blocks * BS),
                    Op::Zero { unmap, .. } => b.write_zeroes(block * BS, blocks * BS, unmap),
                    _ => unreachable!(),
                };
                if in_range(block, blocks) {
                    r.unwrap();
                    model[(block * BS) as usize..((block + blocks) * BS) as usize].fill(0);
                } else {
                    assert!(r.is_err(), "out-of-range op accepted: {op:?}");
                }
            }
            Op::Read { block, blocks } => {
                let mut buf = vec![0xEEu8; (blocks * BS) as usize];
                let r = b.read_at(&mut buf, block * BS);
                if in_range(block, blocks) {
                    r.unwrap();
                    assert_eq!(
                        buf,
                        &model[(block * BS) as usize..((block + blocks) * BS) as usize],
                        "{op:?}"
                    );
                } else {
                    assert!(r.is_err());
                }
            }
        }
    }
    let mut all = vec![0u8; CAP as usize];
    b.read_at(&mut all, 0).unwrap();
    assert!(all == model, "final content differs from the model");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn ram_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let b = RamBackstore::new(CAP, BS as u32).unwrap();
        check(&b, &ops);
    }

    #[test]
    fn file_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut o = FileOptions::new(dir.path().join("m.img"));
        o.size = Some(CAP);
        let b = FileBackstore::open(o).unwrap();
        check(&b, &ops);
    }
}
