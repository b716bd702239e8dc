//! Executing plans all-or-nothing, and the high-level operations built on them
//! (apply, restore, clear).

use rustio_config::{SaveConfig, StorageObject};

use crate::error::{Error, Result, Rollback};
use crate::lio::Lio;
use crate::ops::Op;
use crate::plan::{create_all, delete_all, diff, Plan};

/// Outcome of an executed plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Steps executed.
    pub steps: usize,
}

impl Lio {
    /// Runs `plan`; when a step fails, the completed steps are undone in reverse order
    /// and the error says whether that left the previous configuration.
    ///
    /// `progress` is called before each step.
    pub fn run_plan(&self, plan: &Plan, progress: &mut dyn FnMut(usize, &Op)) -> Result<Applied> {
        let mut undo: Vec<Op> = Vec::new();
        let total = plan.ops.len();
        for (i, op) in plan.ops.iter().enumerate() {
            progress(i + 1, op);
            if let Err(e) = self.execute(op, &mut undo) {
                tracing::debug!(step = i + 1, op = %op, error = %e, "step failed, rolling back");
                let rollback = self.rollback(undo);
                return Err(Error::StepFailed {
                    step: i + 1,
                    total,
                    op: op.to_string(),
                    source: Box::new(e),
                    rollback,
                });
            }
        }
        Ok(Applied { steps: total })
    }

    /// Executes undo steps in reverse; failures are collected, not fatal.
    pub(crate) fn rollback(&self, undo: Vec<Op>) -> Rollback {
        let mut r = Rollback::default();
        for op in undo.into_iter().rev() {
            let mut sink = Vec::new();
            match self.execute(&op, &mut sink) {
                Ok(()) => r.undone += 1,
                Err(e) => {
                    tracing::warn!(op = %op, error = %e, "undo step failed");
                    r.failures.push((op.to_string(), e));
                }
            }
        }
        r
    }

    /// The steps that would turn the live configuration into `desired`.
    pub fn plan_apply(&self, desired: &SaveConfig) -> Result<Plan> {
        desired.check()?;
        Ok(diff(&self.state()?, desired))
    }

    /// Turns the live configuration into `desired` with the minimal plan; all or nothing.
    pub fn apply(
        &self,
        desired: &SaveConfig,
        progress: &mut dyn FnMut(usize, &Op),
    ) -> Result<Plan> {
        let plan = self.plan_apply(desired)?;
        self.run_plan(&plan, progress)?;
        Ok(plan)
    }

    /// The steps of a restore (rtslib `restore`): without `clear_existing`, refuses when
    /// a storage object or target of `cfg` already exists; with it, deletes everything
    /// first.
    pub fn plan_restore(&self, cfg: &SaveConfig, clear_existing: bool) -> Result<Plan> {
        cfg.check()?;
        let current = self.dump()?;
        let mut ops = Vec::new();
        if clear_existing {
            ops.extend(delete_all(&current).ops);
        } else {
            let mut clashes = Vec::new();
            for so in &cfg.storage_objects {
                if current
                    .storage_object(so.plugin().as_str(), so.name())
                    .is_some()
                {
                    clashes.push(format!("storage object {}", so.path()));
                }
            }
            for t in &cfg.targets {
                if current.target(&t.fabric, &t.wwn).is_some() {
                    clashes.push(format!("target /{}/{}", t.fabric, t.wwn));
                }
            }
            if !clashes.is_empty() {
                return Err(Error::rule(
                    "restore does not overwrite existing objects; use --clear-existing, or apply for an in-place update",
                    format!("already present: {}", clashes.join(", ")),
                ));
            }
            // Discovery settings are fabric-wide: only change them when the file has them.
            let mut base = SaveConfig::default();
            if cfg.fabric_modules.is_empty() {
                base.fabric_modules = current.fabric_modules.clone();
            }
            let mut wanted = cfg.clone();
            if cfg.fabric_modules.is_empty() {
                wanted.fabric_modules = current.fabric_modules.clone();
            }
            ops.extend(diff(&base, &wanted).ops);
            return Ok(Plan { ops });
        }
        ops.extend(create_all(cfg).ops);
        Ok(Plan { ops })
    }

    /// Restores `cfg`; all or nothing.
    pub fn restore(
        &self,
        cfg: &SaveConfig,
        clear_existing: bool,
        progress: &mut dyn FnMut(usize, &Op),
    ) -> Result<Plan> {
        let plan = self.plan_restore(cfg, clear_existing)?;
        self.run_plan(&plan, progress)?;
        Ok(plan)
    }

    /// Deletes the whole configuration (rtslib `clear_existing`); all or nothing.
    pub fn clear(&self, progress: &mut dyn FnMut(usize, &Op)) -> Result<Plan> {
        let plan = delete_all(&self.dump()?);
        self.run_plan(&plan, progress)?;
        Ok(plan)
    }

    /// Creates one storage object (convenience for callers outside plans).
    pub fn create_storage_object(&self, so: StorageObject) -> Result<()> {
        self.run_plan(
            &Plan {
                ops: vec![Op::CreateStorageObject(Box::new(so))],
            },
            &mut |_, _| {},
        )
        .map(|_| ())
    }
}
