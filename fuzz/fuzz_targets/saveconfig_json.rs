//! Fuzzes the saveconfig.json parser: any bytes must parse or fail cleanly, and
//! anything accepted must survive serialize → parse unchanged; validation must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = rustio_config::parse::from_str(text) {
        let _ = rustio_config::validate::validate(&cfg);
        let out = rustio_config::parse::to_string_pretty(&cfg).expect("accepted input serializes");
        let again = rustio_config::parse::from_str(&out).expect("own output parses");
        assert_eq!(again, cfg, "round trip changed the configuration");
    }
});
