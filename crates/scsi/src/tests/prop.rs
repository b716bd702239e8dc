//! Property tests: arbitrary CDBs and data-out never panic and always produce a
//! well-formed response.

use proptest::prelude::*;

use super::*;
use crate::cdb;

fn any_cdb() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..=32),
        // Known opcodes with random fields (much more interesting than random opcodes).
        (
            proptest::sample::select(
                cdb::COMMANDS
                    .iter()
                    .map(|o| (o.opcode, o.service_action, o.cdb_len()))
                    .collect::<Vec<_>>()
            ),
            proptest::collection::vec(any::<u8>(), 32)
        )
            .prop_map(|((op, sa, len), mut rest)| {
                rest[0] = op;
                if let Some(sa) = sa {
                    rest[1] = (rest[1] & 0xe0) | sa as u8;
                }
                // Keep transfers small so the test stays fast; control byte mostly clean.
                rest.truncate(len.max(1));
                if len > 1 {
                    rest[len - 1] &= 0xc0;
                }
                rest
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_commands_are_answered(cdb in any_cdb(), data in proptest::collection::vec(any::<u8>(), 0..2048), who in 0u32..3) {
        let mut c = LuConfig::new("p", "prop");
        c.max_transfer_blocks = 64;
        c.max_write_same_blocks = 64;
        c.max_unmap_blocks = 64;
        let h = H::with(c);
        let n = nexus(who);
        let (r, d) = h.run_as(&n, &cdb, &data);
        // run_as checks the invariants; spot-check sizes too.
        prop_assert!(d.len() <= 64 * BS as usize + 4096);
        if r.status == Status::CheckCondition {
            let s = r.sense.unwrap();
            if let Some(fp) = s.field_pointer {
                if fp.cdb_or_data {
                    prop_assert!(usize::from(fp.byte) <= cdb.len().max(32));
                }
                prop_assert!(fp.bit.is_none_or(|b| b < 8));
            }
        }
    }

    #[test]
    fn parser_never_panics_and_lengths_are_sane(cdb in proptest::collection::vec(any::<u8>(), 0..=32)) {
        match cdb::parse(&cdb) {
            Ok(c) => {
                let info = cdb::lookup(&cdb).unwrap();
                prop_assert!(cdb.len() >= info.cdb_len());
                // The largest data-out: a 32-bit TRANSFER LENGTH in blocks (WRITE(16),
                // WRITE AND VERIFY(16), SBC-4 5.41, 5.45); COMPARE AND WRITE's 2 × 255
                // blocks and 32-bit parameter list lengths are below it.
                prop_assert!(c.data_out_len(4096) <= u64::from(u32::MAX) * 4096);
            }
            Err(s) => {
                prop_assert_eq!(s.key, SenseKey::IllegalRequest);
                prop_assert!(matches!(s.asc, 0x20 | 0x24));
            }
        }
    }

    #[test]
    fn sense_round_trips(key in 0u8..16, asc: u8, ascq: u8, info: Option<u32>, fp: Option<(bool, u16, Option<u8>)>) {
        let mut s = Sense::new(SenseKey::from_u8(key), asc, ascq);
        if let Some(i) = info { s = s.with_information(u64::from(i)); }
        if let Some((cd, byte, bit)) = fp {
            s.key = SenseKey::IllegalRequest;
            s = s.with_field_pointer(cd, byte, bit.map(|b| b & 7));
        }
        let b = s.to_fixed();
        prop_assert_eq!(Sense::from_fixed(&b), Some(s));
    }
}
