//! Errors of the LIO management library.

use std::fmt;
use std::path::PathBuf;

/// A broken rule of user input or configuration, stated with the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    /// The rule, citing its source where there is one.
    pub rule: String,
    /// What exactly broke it.
    pub detail: String,
}

impl fmt::Display for RuleViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (rule: {})", self.detail, self.rule)
    }
}

/// How a rollback went after a failed step.
#[derive(Debug, Default)]
pub struct Rollback {
    /// Undo steps executed successfully.
    pub undone: usize,
    /// Undo steps that failed, with their error.
    pub failures: Vec<(String, Error)>,
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.failures.is_empty() && self.undone == 0 {
            write!(f, "nothing was changed")
        } else if self.failures.is_empty() {
            write!(
                f,
                "rolled back ({} undo steps), previous configuration restored",
                self.undone
            )
        } else {
            write!(
                f,
                "rollback INCOMPLETE ({} undo steps done, {} failed:",
                self.undone,
                self.failures.len()
            )?;
            for (op, e) in &self.failures {
                write!(f, " [{op}: {e}]")?;
            }
            write!(f, ")")
        }
    }
}

/// Errors of `rustio-lio`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configfs or file operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a value written to a configfs attribute.
    #[error("the kernel rejected {value:?} written to {} (see dmesg for its reason)", path.display())]
    KernelRejected {
        /// Attribute file.
        path: PathBuf,
        /// Value written.
        value: String,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// configfs or the LIO core is not available.
    #[error("LIO configfs is not available at {}: {reason}", root.display())]
    NoConfigfs {
        /// The configfs root looked at.
        root: PathBuf,
        /// Why (which module or mount is missing).
        reason: String,
    },
    /// A kernel module could not be loaded.
    #[error("kernel module {module} is needed for {purpose} but could not be loaded: {detail}")]
    KernelModule {
        /// Module name.
        module: String,
        /// What needed it.
        purpose: String,
        /// modprobe's complaint.
        detail: String,
    },
    /// The object to create exists already.
    #[error("{what} {name} already exists")]
    Exists {
        /// Kind of object.
        what: &'static str,
        /// Its name or path.
        name: String,
    },
    /// The object named does not exist.
    #[error("{what} {name} does not exist")]
    NotFound {
        /// Kind of object.
        what: &'static str,
        /// Its name or path.
        name: String,
    },
    /// The object is still used by others.
    #[error("{what} {name} is in use by {users}; {hint}")]
    InUse {
        /// Kind of object.
        what: &'static str,
        /// Its name or path.
        name: String,
        /// Who uses it.
        users: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// Input breaks a rule.
    #[error("{0}")]
    Rule(RuleViolation),
    /// configfs content rustio cannot interpret.
    #[error("unexpected configfs content at {}: {detail}", path.display())]
    Unexpected {
        /// Where.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// A saveconfig.json problem.
    #[error(transparent)]
    Config(#[from] rustio_config::Error),
    /// A step of a plan failed; what was done before it was rolled back.
    #[error("step {step} of {total} ({op}) failed; {rollback}")]
    StepFailed {
        /// 1-based number of the failing step.
        step: usize,
        /// Number of steps in the plan.
        total: usize,
        /// The step, as printed in the plan.
        op: String,
        /// Why it failed.
        #[source]
        source: Box<Error>,
        /// What the rollback did.
        rollback: Rollback,
    },
}

impl Error {
    /// Shorthand for a rule violation.
    pub fn rule(rule: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Rule(RuleViolation {
            rule: rule.into(),
            detail: detail.into(),
        })
    }

    /// True when the rollback after a failed step left the previous configuration.
    pub fn rolled_back_cleanly(&self) -> bool {
        matches!(self, Error::StepFailed { rollback, .. } if rollback.failures.is_empty())
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
