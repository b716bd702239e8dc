//! Conversion of the typed AST into targetcli's saveconfig.json model, with a
//! [`Report`] finding for every construct of the file.
//!
//! Principles:
//! * Never grant more access than SCST did: when LIO cannot express an access rule
//!   exactly, the imported configuration grants less, and the report says so.
//! * Never change a device's geometry: a device whose block size LIO cannot present is
//!   not imported at all.
//! * Values SCST itself rejects are errors (with position), not findings.

mod alua;
mod devices;
mod iscsi;
mod rules;

use std::collections::HashMap;

use rustio_config::{SaveConfig, StorageObject};

use crate::ast::{self, Attribute};
use crate::error::{Error, ErrorKind, Pos};
use crate::report::{Fidelity, Report};
use crate::values::{mask_account, parse_bool, parse_ulong};

/// The result of an import: the configuration and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The targetcli/rtslib configuration, ready for `rustio restore`.
    pub config: SaveConfig,
    /// One finding per construct of the input.
    pub report: Report,
}

/// What became of a device.
#[derive(Debug, Clone)]
enum DevState {
    /// Imported as `out.storage_objects[so]`.
    Imported {
        so: usize,
        /// `read_only 1` on the device: every LUN of it is write-protected.
        read_only: bool,
        /// A pass-through (pscsi) device.
        passthrough: bool,
        /// A direct-access (SBC) device: LIO's demo mode write-protects only these.
        disk: bool,
        /// `expl_alua 1`.
        expl_alua: bool,
    },
    /// Not imported, with the reason.
    NotImported(String),
}

#[derive(Debug, Clone)]
struct Dev<'a> {
    ast: &'a ast::Device,
    state: DevState,
}

/// What became of a target (of any driver).
#[derive(Debug, Clone)]
enum TargetState {
    /// Imported as `out.targets[out]` with a single TPG.
    Iscsi {
        out: usize,
        /// `rel_tgt_id` given in the TARGET_DRIVER section, with its position.
        rel_tgt_id: Option<(u64, Pos)>,
    },
    /// Not imported, with the reason.
    NotImported(String),
}

struct Converter<'a> {
    ast: &'a ast::Config,
    report: Report,
    out: SaveConfig,
    devs: Vec<Dev<'a>>,
    dev_index: HashMap<&'a str, usize>,
    /// Device name → the DEVICE_GROUP it belongs to.
    dg_of_device: HashMap<&'a str, &'a ast::DeviceGroup>,
    /// A non-zero `setup_id`, when the file sets one.
    setup_id: Option<(u32, Pos)>,
    targets: HashMap<&'a str, TargetState>,
    /// Backing paths already used by an imported storage object.
    used_paths: HashMap<String, String>,
}

/// Converts a parsed scst.conf.
pub fn convert(ast: &ast::Config) -> Result<Import, Error> {
    let mut c = Converter {
        ast,
        report: Report::default(),
        out: SaveConfig::default(),
        devs: Vec::new(),
        dev_index: HashMap::new(),
        dg_of_device: HashMap::new(),
        setup_id: None,
        targets: HashMap::new(),
        used_paths: HashMap::new(),
    };
    for dg in &ast.device_groups {
        for d in &dg.devices {
            c.dg_of_device.insert(d.name.as_str(), dg);
        }
    }
    c.globals()?;
    c.handlers()?;
    c.target_drivers()?;
    c.device_groups()?;
    c.alua_section()?;
    c.finish()
}

impl<'a> Converter<'a> {
    fn push(
        &mut self,
        pos: Pos,
        fidelity: Fidelity,
        construct: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.report.push(pos, fidelity, construct, detail);
    }

    /// Reports an attribute (secrets masked).
    fn attr(&mut self, a: &Attribute, fidelity: Fidelity, detail: impl Into<String>) {
        let construct = display_attr(a);
        self.report.push(a.pos, fidelity, construct, detail);
    }

    /// Drops repeated identical attribute lines (scstadmin merges them into one hash key)
    /// and rejects single-valued attributes given twice with different values.
    fn dedupe<'b>(
        &mut self,
        attrs: &'b [Attribute],
        multi: &[&str],
    ) -> Result<Vec<&'b Attribute>, Error> {
        let mut out: Vec<&'b Attribute> = Vec::new();
        let mut first: HashMap<(&str, Option<&str>), Pos> = HashMap::new();
        let mut by_name: HashMap<&str, &'b Attribute> = HashMap::new();
        for a in attrs {
            if let Some(p) = first.get(&(a.name.as_str(), a.value.as_deref())) {
                let detail = format!("repeats line {}; scstadmin merges identical lines", p.line);
                self.attr(a, Fidelity::Ignored, detail);
                continue;
            }
            if !multi.contains(&a.name.as_str()) {
                if let Some(prev) = by_name.get(a.name.as_str()) {
                    return Err(Error::new(
                        a.pos,
                        ErrorKind::Conflict(format!(
                            "{} is given twice with different values ({:?} on line {} and {:?} here)",
                            a.name,
                            prev.value_str(),
                            prev.pos.line,
                            a.value_str()
                        )),
                    ));
                }
                by_name.insert(a.name.as_str(), a);
            }
            first.insert((a.name.as_str(), a.value.as_deref()), a.pos);
            out.push(a);
        }
        Ok(out)
    }

    fn globals(&mut self) -> Result<(), Error> {
        let attrs = self.dedupe(&self.ast.attributes, &[])?;
        for a in attrs {
            match a.name.as_str() {
                "setup_id" => {
                    let v = ulong(a)?;
                    let v = u32::try_from(v)
                        .map_err(|_| bad_value(a, "setup_id is a 32-bit number"))?;
                    if v == 0 {
                        self.attr(
                            a,
                            Fidelity::Exact,
                            "the default; no LIO counterpart is needed",
                        );
                    } else {
                        self.setup_id = Some((v, a.pos));
                        self.attr(
                            a,
                            Fidelity::Note,
                            "no LIO counterpart: SCST only uses it to generate device identifiers \
                             (see the unit serial findings of the devices)",
                        );
                    }
                }
                "trace_level" => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "SCST tracing setting; LIO logs through the kernel's dynamic debug",
                ),
                "threads"
                | "max_tasklet_cmd"
                | "poll_us"
                | "measure_latency"
                | "force_global_sgv_pool"
                | "suspend"
                | "async_lun_replace"
                | "forcibly_close_sessions"
                | "auto_cm_assignment" => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "SCST core tuning without an LIO counterpart",
                ),
                "cluster_name" => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "SCST cluster (DLM) persistent reservations have no LIO counterpart",
                ),
                "version" | "last_sysfs_mgmt_res" => self.attr(
                    a,
                    Fidelity::Ignored,
                    "read-only SCST attribute; SCST ignores it too",
                ),
                _ => self.attr(a, Fidelity::Unsupported, "unknown global SCST attribute"),
            }
        }
        Ok(())
    }

    /// Reports every construct of a subtree that is not imported.
    fn not_imported_attrs(&mut self, attrs: &[Attribute], why: &str) {
        for a in attrs {
            self.attr(a, Fidelity::Unsupported, why.to_owned());
        }
    }

    fn target_drivers(&mut self) -> Result<(), Error> {
        let ast = self.ast;
        for d in &ast.target_drivers {
            match d.name.as_str() {
                "iscsi" => self.iscsi_driver(d)?,
                "copy_manager" => self.copy_manager(d),
                other => {
                    let why = match other {
                        "scst_local" => "LIO's counterpart is the loopback fabric, which this importer does not convert",
                        "qla2x00t" | "qla2xxx_scst" => {
                            "LIO's counterpart is the qla2xxx fabric, which this importer does not convert"
                        }
                        "ib_srpt" | "srpt" => "LIO's counterpart is the srpt fabric, which this importer does not convert",
                        "fcst" => "LIO's counterpart is the tcm_fc fabric, which this importer does not convert",
                        "isert" | "iser" => {
                            "LIO serves iSER through iSCSI portals with iser enabled; this importer does not convert it"
                        }
                        _ => "unknown target driver",
                    };
                    self.push(
                        d.pos,
                        Fidelity::Unsupported,
                        format!("TARGET_DRIVER {other}"),
                        why,
                    );
                    let why = format!("TARGET_DRIVER {other} is not imported: {why}");
                    self.not_imported_attrs(&d.attributes, &why);
                    for t in &d.targets {
                        self.targets
                            .insert(t.name.as_str(), TargetState::NotImported(why.clone()));
                        self.not_imported_target(t, &why);
                    }
                }
            }
        }
        Ok(())
    }

    fn not_imported_target(&mut self, t: &ast::Target, why: &str) {
        self.push(
            t.pos,
            Fidelity::Unsupported,
            format!("TARGET {}", t.name),
            why.to_owned(),
        );
        if let Some(p) = t.hw_target {
            self.push(p, Fidelity::Unsupported, "HW_TARGET", why.to_owned());
        }
        self.not_imported_attrs(&t.attributes, why);
        for l in &t.luns {
            self.not_imported_lun(l, why);
        }
        for g in &t.groups {
            self.push(
                g.pos,
                Fidelity::Unsupported,
                format!("GROUP {}", g.name),
                why.to_owned(),
            );
            self.not_imported_attrs(&g.attributes, why);
            for l in &g.luns {
                self.not_imported_lun(l, why);
            }
            for i in &g.initiators {
                self.push(
                    i.pos,
                    Fidelity::Unsupported,
                    format!("INITIATOR {}", i.name),
                    why.to_owned(),
                );
                self.not_imported_attrs(&i.attributes, why);
            }
        }
    }

    fn not_imported_lun(&mut self, l: &ast::Lun, why: &str) {
        self.push(
            l.pos,
            Fidelity::Unsupported,
            format!("LUN {} {}", l.number, l.device),
            why.to_owned(),
        );
        self.not_imported_attrs(&l.attributes, why);
    }

    /// SCST's copy manager target: LIO implements EXTENDED COPY in its core.
    fn copy_manager(&mut self, d: &'a ast::TargetDriver) {
        let why = "LIO implements EXTENDED COPY (SPC-4 6.4) in the target core for every device \
                   (attribute emulate_3pc, on by default); no copy manager target is needed";
        self.push(d.pos, Fidelity::Exact, "TARGET_DRIVER copy_manager", why);
        for a in &d.attributes {
            self.attr(
                a,
                Fidelity::Unsupported,
                "copy manager setting without an LIO counterpart",
            );
        }
        for t in &d.targets {
            self.targets.insert(
                t.name.as_str(),
                TargetState::NotImported(
                    "SCST's copy manager target is not imported: LIO needs none".into(),
                ),
            );
            self.push(t.pos, Fidelity::Exact, format!("TARGET {}", t.name), why);
            if let Some(p) = t.hw_target {
                self.push(
                    p,
                    Fidelity::Ignored,
                    "HW_TARGET",
                    "marks SCST's built-in copy manager target",
                );
            }
            for a in &t.attributes {
                self.attr(
                    a,
                    Fidelity::Unsupported,
                    "copy manager setting without an LIO counterpart",
                );
            }
            for l in &t.luns {
                self.push(
                    l.pos,
                    Fidelity::Exact,
                    format!("LUN {} {}", l.number, l.device),
                    why,
                );
                for a in &l.attributes {
                    self.attr(
                        a,
                        Fidelity::Ignored,
                        "copy manager LUN setting; nothing to reproduce",
                    );
                }
            }
            for g in &t.groups {
                self.push(
                    g.pos,
                    Fidelity::Unsupported,
                    format!("GROUP {}", g.name),
                    "copy manager access group",
                );
                self.not_imported_attrs(&g.attributes, "copy manager access group");
                for l in &g.luns {
                    self.not_imported_lun(l, "copy manager access group");
                }
                for i in &g.initiators {
                    self.push(
                        i.pos,
                        Fidelity::Unsupported,
                        format!("INITIATOR {}", i.name),
                        "copy manager access group",
                    );
                    self.not_imported_attrs(&i.attributes, "copy manager access group");
                }
            }
        }
    }

    fn alua_section(&mut self) -> Result<(), Error> {
        if let Some(alua) = &self.ast.alua {
            self.push(
                alua.pos,
                Fidelity::Exact,
                "ALUA",
                "global ALUA section; its settings are reported one by one",
            );
            let attrs = self.dedupe(&alua.attributes, &[])?;
            for a in attrs {
                self.attr(
                    a,
                    Fidelity::Unsupported,
                    "global SCST ALUA setting without an LIO counterpart",
                );
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Import, Error> {
        self.report.sort();
        let issues = rustio_config::validate::validate(&self.out);
        if issues.has_errors() {
            return Err(Error::new(
                Pos::default(),
                ErrorKind::InvalidOutput(issues.to_string()),
            ));
        }
        Ok(Import {
            config: self.out,
            report: self.report,
        })
    }

    fn so_path(&self, so: usize) -> String {
        self.out
            .storage_objects
            .get(so)
            .map(StorageObject::path)
            .unwrap_or_default()
    }
}

/// An attribute as written, with CHAP secrets masked.
fn display_attr(a: &Attribute) -> String {
    match a.name.as_str() {
        "IncomingUser" | "OutgoingUser" => {
            format!("{} \"{}\"", a.name, mask_account(a.value_str()))
        }
        _ => a.display(),
    }
}

fn bad_value(a: &Attribute, reason: impl Into<String>) -> Error {
    Error::new(
        a.value_pos.unwrap_or(a.pos),
        ErrorKind::BadValue {
            attribute: a.name.clone(),
            value: a.value_str().to_owned(),
            reason: reason.into(),
        },
    )
}

/// A boolean attribute; SCST rejects values that are not integers.
fn boolean(a: &Attribute) -> Result<bool, Error> {
    parse_bool(a.value_str()).ok_or_else(|| bad_value(a, "expected 0 or 1"))
}

/// An unsigned integer attribute (kstrtoul base 0).
fn ulong(a: &Attribute) -> Result<u64, Error> {
    parse_ulong(a.value_str()).ok_or_else(|| bad_value(a, "expected an unsigned integer"))
}
