//! Fuzzes the iSCSI PDU decoder (RFC 7143 11): arbitrary bytes must never panic, and
//! whatever decodes must re-encode to something that decodes to the same PDU.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustio_iscsi_proto::pdu::{parse_ahs, Digests, Header, Pdu, BHS_LEN};

fuzz_target!(|data: &[u8]| {
    for digests in [
        Digests::default(),
        Digests {
            header: true,
            data: true,
        },
    ] {
        if let Ok((pdu, used)) = Pdu::decode(data, digests, 1 << 16) {
            assert!(used <= data.len());
            let wire = pdu.encode(digests);
            let (again, n) = Pdu::decode(&wire, digests, 1 << 16).expect("re-encoded PDU decodes");
            assert_eq!(n, wire.len());
            assert_eq!(again, pdu);
            let _ = parse_ahs(&pdu.ahs);
        }
    }
    if data.len() >= BHS_LEN {
        let mut bhs = [0u8; BHS_LEN];
        bhs.copy_from_slice(&data[..BHS_LEN]);
        let h = Header::parse(&bhs);
        let _ = h.encode(0, 0);
    }
});
