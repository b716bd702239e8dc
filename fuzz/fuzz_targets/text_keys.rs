//! Fuzzes the text key=value parser and the key negotiation (RFC 7143 6, 13): no panic,
//! and parsed segments round-trip through the encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustio_iscsi_proto::text::{
    encode, negotiate_operational, parse, parse_binary, parse_number, Negotiated, NegotiationScope,
    TargetOffer,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = parse(data) {
        let again = parse(&encode(&pairs)).expect("encoded pairs parse");
        assert_eq!(again, pairs);
        let offer = TargetOffer::default();
        let mut n = Negotiated::default();
        for (discovery, leading) in [(false, true), (true, true), (false, false)] {
            for (k, v) in &pairs {
                let _ = negotiate_operational(
                    k,
                    v,
                    &offer,
                    NegotiationScope { discovery, leading },
                    &mut n,
                );
                let _ = parse_binary(v);
                let _ = parse_number(v);
            }
        }
        n.finish();
        assert!(n.first_burst_length <= n.max_burst_length);
    }
});
