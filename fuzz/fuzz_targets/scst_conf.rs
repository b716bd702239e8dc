//! Fuzzes the scst.conf importer (`rustio import scst`): parsing, the typed AST and the
//! conversion must never panic, errors must carry a position, and whatever is imported
//! must be a valid saveconfig that prints and reads back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match rustio_scst::import(data) {
        Ok(imported) => {
            let issues = rustio_config::validate::validate(&imported.config);
            assert!(!issues.has_errors(), "invalid output:\n{issues}");
            let json =
                rustio_config::parse::to_string_pretty(&imported.config).expect("serializes");
            let back = rustio_config::parse::from_str(&json).expect("reads back");
            assert_eq!(back, imported.config);
            let _ = imported.report.render("fuzz.conf");
        }
        Err(e) => {
            assert!(e.line() >= 1, "error without a line: {e}");
            assert!(
                !matches!(e.kind, rustio_scst::ErrorKind::InvalidOutput(_)),
                "importer produced an invalid configuration: {e}"
            );
        }
    }
});
