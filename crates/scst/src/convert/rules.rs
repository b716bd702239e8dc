//! Tables for SCST attributes whose finding depends only on the attribute's name and a
//! simple test of its value (most settings without an LIO counterpart: "0 is what LIO
//! does, anything else is lost").
//!
//! One [`Rule`] replaces a match arm of the form "parse the value; if it is the harmless
//! value report X, else report Y". The value is parsed exactly as the arm did (`boolean`
//! for 0/1 switches, `ulong` for numbers), so a value SCST rejects is still an error.

use super::{bad_value, boolean, ulong, Converter};
use crate::ast::Attribute;
use crate::error::Error;
use crate::report::Fidelity;

/// A Yes/No login key (RFC 7143 5.2.2); iSCSI-SCST reads it case-insensitively.
pub(super) fn yes_no(a: &Attribute) -> Result<&'static str, Error> {
    match a.value_str().to_ascii_lowercase().as_str() {
        "yes" => Ok("Yes"),
        "no" => Ok("No"),
        _ => Err(bad_value(a, "expected Yes or No")),
    }
}

/// Which value of an attribute earns a rule's `pass` finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Test {
    /// Every value (the value is not parsed).
    Always,
    /// A boolean attribute set to 1.
    On,
    /// A boolean attribute set to 0.
    Off,
    /// An unsigned integer attribute set to 0.
    Zero,
    /// An attribute with an empty value.
    Empty,
    /// A Yes/No login key (RFC 7143 5.2.2) set to No.
    No,
}

impl Test {
    /// Whether `a` passes the test; a value SCST rejects is an error.
    fn passes(self, a: &Attribute) -> Result<bool, Error> {
        Ok(match self {
            Test::Always => true,
            Test::On => boolean(a)?,
            Test::Off => !boolean(a)?,
            Test::Zero => ulong(a)? == 0,
            Test::Empty => a.value_str().is_empty(),
            Test::No => yes_no(a)? == "No",
        })
    }
}

/// A finding for one value class of a set of attribute names.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    /// The attribute names the rule covers.
    pub(super) names: &'static [&'static str],
    /// Which values get `pass`.
    pub(super) test: Test,
    /// The finding for values that pass the test.
    pub(super) pass: (Fidelity, &'static str),
    /// The finding for the other values.
    pub(super) fail: (Fidelity, &'static str),
}

impl Rule {
    /// A rule whose finding does not depend on the value.
    pub(super) const fn fixed(
        names: &'static [&'static str],
        fidelity: Fidelity,
        detail: &'static str,
    ) -> Rule {
        Rule {
            names,
            test: Test::Always,
            pass: (fidelity, detail),
            fail: (fidelity, detail),
        }
    }

    /// A rule for a setting: `pass` when the value passes `test`, else `fail`.
    pub(super) const fn when(
        names: &'static [&'static str],
        test: Test,
        pass: (Fidelity, &'static str),
        fail: (Fidelity, &'static str),
    ) -> Rule {
        Rule {
            names,
            test,
            pass,
            fail,
        }
    }

    /// The finding for `a`.
    fn judge(&self, a: &Attribute) -> Result<(Fidelity, &'static str), Error> {
        Ok(if self.test.passes(a)? {
            self.pass
        } else {
            self.fail
        })
    }
}

/// The first rule of `rules` that covers `name`.
pub(super) fn lookup<'r>(
    rules: impl IntoIterator<Item = &'r Rule>,
    name: &str,
) -> Option<&'r Rule> {
    rules.into_iter().find(|r| r.names.contains(&name))
}

impl Converter<'_> {
    /// Reports `a` by `rule`.
    pub(super) fn by_rule(&mut self, a: &Attribute, rule: &Rule) -> Result<(), Error> {
        let (fidelity, detail) = rule.judge(a)?;
        self.attr(a, fidelity, detail);
        Ok(())
    }

    /// Reports `a` by the first of `rules` that covers it, else as unsupported with
    /// `unknown`.
    pub(super) fn by_rules<'r>(
        &mut self,
        a: &Attribute,
        rules: impl IntoIterator<Item = &'r Rule>,
        unknown: impl Into<String>,
    ) -> Result<(), Error> {
        match lookup(rules, &a.name) {
            Some(rule) => self.by_rule(a, rule),
            None => {
                self.attr(a, Fidelity::Unsupported, unknown);
                Ok(())
            }
        }
    }
}

/// An attribute line `name value` at line 1, for unit tests.
#[cfg(test)]
pub(super) fn test_attr(name: &str, value: &str) -> Attribute {
    use crate::error::Pos;
    Attribute {
        name: name.into(),
        value: Some(value.into()),
        pos: Pos::new(1, 1),
        value_pos: Some(Pos::new(1, 5)),
    }
}

#[cfg(test)]
mod tests {
    use super::test_attr as attr;
    use super::*;

    const RULES: &[Rule] = &[
        Rule::when(
            &["black_hole"],
            Test::Zero,
            (Fidelity::Exact, "off"),
            (Fidelity::Unsupported, "on"),
        ),
        Rule::fixed(&["comment", "tid"], Fidelity::Ignored, "ignored"),
        Rule::fixed(&["tid"], Fidelity::Exact, "shadowed"),
    ];

    #[test]
    fn tests_parse_values_as_scst_does() {
        // kstrtoul base 0: hex is a number, "x" is not.
        assert!(Test::Zero.passes(&attr("black_hole", "0x0")).unwrap());
        assert!(!Test::Zero.passes(&attr("black_hole", "2")).unwrap());
        assert!(Test::Zero.passes(&attr("black_hole", "x")).is_err());
        assert!(Test::On.passes(&attr("forwarding", "1")).unwrap());
        assert!(Test::Off.passes(&attr("forwarding", "0")).unwrap());
        assert!(Test::Off.passes(&attr("forwarding", "yes")).is_err());
        assert!(Test::Empty.passes(&attr("redirect", "")).unwrap());
        assert!(!Test::Empty.passes(&attr("redirect", "10.0.0.1")).unwrap());
        // RFC 7143 5.2.2 Yes/No values; iSCSI-SCST compares them case-insensitively.
        assert!(Test::No.passes(&attr("OFMarker", "no")).unwrap());
        assert!(!Test::No.passes(&attr("OFMarker", "Yes")).unwrap());
        assert!(Test::No.passes(&attr("OFMarker", "0")).is_err());
        // Always never looks at the value, so no value is an error.
        assert!(Test::Always.passes(&attr("comment", "")).unwrap());
    }

    #[test]
    fn first_covering_rule_wins() {
        let r = lookup(RULES, "tid").unwrap();
        assert_eq!(r.pass, (Fidelity::Ignored, "ignored"));
        assert!(lookup(RULES, "unknown").is_none());
        let bh = lookup(RULES, "black_hole").unwrap();
        assert_eq!(
            bh.judge(&attr("black_hole", "0")).unwrap(),
            (Fidelity::Exact, "off")
        );
        assert_eq!(
            bh.judge(&attr("black_hole", "3")).unwrap(),
            (Fidelity::Unsupported, "on")
        );
        assert!(bh.judge(&attr("black_hole", "-1")).is_err());
    }
}
