//! Golden tests over the scst.conf corpus in `tests/scst/` (workspace root).
//!
//! For every `NAME.conf` the import must produce exactly `NAME.json` (targetcli-style
//! saveconfig) and `NAME.report`; for every `errors/NAME.conf` it must fail with exactly
//! `errors/NAME.err`. `UPDATE_GOLDEN=1 cargo test -p rustio-scst --test golden` rewrites the
//! golden files; they are reviewed by hand against the mapping rules in
//! docs/migrating-from-scst.md before being committed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

mod common;

use common::construct_positions;
use rustio_scst::ast;
use rustio_scst::{import, Pos};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scst")
}

fn confs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    v.sort();
    v
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// Compares `actual` with the golden file, or rewrites it under UPDATE_GOLDEN=1.
fn check(golden: &Path, actual: &str, failures: &mut Vec<String>) {
    if updating() {
        fs::write(golden, actual).unwrap();
        return;
    }
    match fs::read_to_string(golden) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
            golden.display()
        )),
        Err(e) => failures.push(format!("{}: {e}", golden.display())),
    }
}

#[test]
fn corpus_imports_match_goldens() {
    let dir = corpus_dir();
    let files = confs(&dir);
    assert!(files.len() >= 10, "corpus is missing: {}", dir.display());
    let mut failures = Vec::new();
    for conf in files {
        let name = conf.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read(&conf).unwrap();
        let imported = match import(&text) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{name}: unexpected error: {e}"));
                continue;
            }
        };
        let json = rustio_config::parse::to_string_pretty(&imported.config).unwrap();
        check(&conf.with_extension("json"), &json, &mut failures);
        check(
            &conf.with_extension("report"),
            &imported.report.render(&name),
            &mut failures,
        );

        // The JSON is valid saveconfig that reads back to the same model.
        let back = rustio_config::parse::from_str(&json).unwrap();
        assert_eq!(back, imported.config, "{name}: JSON does not read back");
        let issues = rustio_config::validate::validate(&back);
        assert!(!issues.has_errors(), "{name}: invalid output:\n{issues}");

        // Nothing is dropped silently: every construct has a finding on its line.
        let ast = ast::parse(&text).unwrap();
        let reported: BTreeSet<Pos> = imported.report.findings.iter().map(|f| f.pos).collect();
        for pos in construct_positions(&ast) {
            assert!(
                reported.contains(&pos),
                "{name}: construct at {pos} has no finding"
            );
        }
        // Findings never show CHAP secrets.
        let report = imported.report.render(&name);
        for line in String::from_utf8_lossy(&text).lines() {
            let l = line.trim();
            if l.starts_with("IncomingUser") || l.starts_with("OutgoingUser") {
                if let Some(secret) = l.trim_end_matches('"').split_whitespace().nth(2) {
                    assert!(
                        !report.contains(secret),
                        "{name}: report shows secret {secret}"
                    );
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn error_corpus_matches_goldens() {
    let dir = corpus_dir().join("errors");
    let files = confs(&dir);
    assert!(
        files.len() >= 5,
        "error corpus is missing: {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for conf in files {
        let name = conf.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read(&conf).unwrap();
        match import(&text) {
            Ok(_) => failures.push(format!("{name}: imported, but an error was expected")),
            Err(e) => check(
                &conf.with_extension("err"),
                &format!("{name}:{e}\n"),
                &mut failures,
            ),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
