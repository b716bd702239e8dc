//! The import report: one [`Finding`] per construct of scst.conf, saying how faithfully
//! LIO reproduces it.

use std::fmt;

use serde::Serialize;

use crate::error::Pos;

/// How faithfully a construct is reproduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fidelity {
    /// LIO behaves as SCST did.
    Exact,
    /// Reproduced with a difference the finding describes.
    Approximate,
    /// Not reproduced: LIO (or this importer) has no equivalent.
    Unsupported,
    /// Nothing to reproduce: SCST or scstadmin ignores the construct too.
    Ignored,
    /// Information about a behaviour difference of the two targets that no setting in
    /// the file controls; not a loss of anything the file says.
    Note,
}

impl Fidelity {
    /// The word used in the text report.
    pub fn as_str(self) -> &'static str {
        match self {
            Fidelity::Exact => "exact",
            Fidelity::Approximate => "approximate",
            Fidelity::Unsupported => "unsupported",
            Fidelity::Ignored => "ignored",
            Fidelity::Note => "note",
        }
    }

    /// Whether the construct loses something that the file says.
    pub fn is_lossy(self) -> bool {
        matches!(self, Fidelity::Approximate | Fidelity::Unsupported)
    }
}

impl fmt::Display for Fidelity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Where the construct is.
    pub pos: Pos,
    /// How faithfully it is reproduced.
    pub fidelity: Fidelity,
    /// The construct as written (CHAP secrets masked).
    pub construct: String,
    /// What became of it, and how it differs.
    pub detail: String,
}

/// All findings of one import, sorted by position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Adds a finding.
    pub fn push(
        &mut self,
        pos: Pos,
        fidelity: Fidelity,
        construct: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.findings.push(Finding {
            pos,
            fidelity,
            construct: construct.into(),
            detail: detail.into(),
        });
    }

    /// Sorts findings by position, keeping the order of findings at the same position.
    pub fn sort(&mut self) {
        self.findings.sort_by_key(|f| f.pos);
    }

    /// Whether any finding is approximate or unsupported (what `--strict` refuses).
    pub fn is_lossy(&self) -> bool {
        self.findings.iter().any(|f| f.fidelity.is_lossy())
    }

    /// How many findings have the given fidelity.
    pub fn count(&self, fidelity: Fidelity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.fidelity == fidelity)
            .count()
    }

    /// The lossy findings.
    pub fn lossy(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.fidelity.is_lossy())
    }

    /// The summary line, e.g. `12 exact, 1 approximate, 0 unsupported, 0 ignored, 2 notes`.
    pub fn summary(&self) -> String {
        format!(
            "{} exact, {} approximate, {} unsupported, {} ignored, {} notes",
            self.count(Fidelity::Exact),
            self.count(Fidelity::Approximate),
            self.count(Fidelity::Unsupported),
            self.count(Fidelity::Ignored),
            self.count(Fidelity::Note),
        )
    }

    /// Renders the report as text, one finding per line prefixed with `source:line:col:`
    /// like compiler diagnostics, followed by a summary line.
    pub fn render(&self, source: &str) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&format!(
                "{source}:{}:{}: {}: {}: {}\n",
                f.pos.line, f.pos.column, f.fidelity, f.construct, f.detail
            ));
        }
        out.push_str(&format!(
            "{source}: summary: {}; {}\n",
            self.summary(),
            if self.is_lossy() {
                "the import is lossy"
            } else {
                "nothing is lost"
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_is_approximate_or_unsupported() {
        let mut r = Report::default();
        r.push(Pos::new(2, 1), Fidelity::Exact, "a 1", "ok");
        r.push(Pos::new(1, 1), Fidelity::Note, "b", "fyi");
        r.push(Pos::new(3, 1), Fidelity::Ignored, "c", "SCST ignores it");
        assert!(!r.is_lossy());
        r.push(Pos::new(1, 5), Fidelity::Approximate, "d", "differs");
        assert!(r.is_lossy());
        r.sort();
        let lines: Vec<u32> = r.findings.iter().map(|f| f.pos.line).collect();
        assert_eq!(lines, [1, 1, 2, 3]);
        assert_eq!(r.findings[0].construct, "b");
        assert_eq!(
            r.render("x.conf").lines().last().unwrap(),
            "x.conf: summary: 1 exact, 1 approximate, 0 unsupported, 1 ignored, 1 notes; the import is lossy"
        );
        assert_eq!(
            r.render("x.conf").lines().nth(1).unwrap(),
            "x.conf:1:5: approximate: d: differs"
        );
    }
}
