//! A fake LIO kernel over an ordinary directory, for tests (feature `test-utils`).
//!
//! In a temporary directory `mkdir` creates an empty directory and every file is
//! writable; configfs is different, and `FakeKernel` reproduces the differences that
//! matter to rustio:
//!
//! * `mkdir` of a group creates its attribute files and default sub-groups (device
//!   `attrib/ wwn/ alua/default_tg_pt_gp/ ...`, TPG `lun/ np/ acls/ attrib/ auth/
//!   param/`, ...) with the kernel's default values, and refuses names the kernel
//!   refuses (`core/foo`, `tpgt_x`, `lun_70000`, a portal that is not `ip:port`);
//! * `rmdir` removes the default contents but fails with `ENOTEMPTY` while
//!   user-created children or links remain, and with `EBUSY` while a LUN links to a
//!   storage object or a mapped LUN links to a LUN;
//! * writes are checked like the kernel's store handlers: read-only files give
//!   `EACCES`, `control` is write-only, `enable` configures the device and fails when
//!   its backing file or device is missing, numeric attributes reject text,
//!   `block_size` only takes 512/1024/2048/4096, a `nexus` can be set once, the unit
//!   serial cannot change while the device is exported;
//! * reads of a device's `info` are generated from its state (status ACTIVATED while
//!   a LUN links to it, sizes, mode), like `show_configfs_dev_params`;
//! * symlinks are only accepted from a LUN to an enabled storage object and from a
//!   mapped LUN to a LUN of the same TPG.
//!
//! Faults can be injected with [`FakeKernel::inject`] to test rollback.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;

const STATE: &str = ".fake_state";

/// The kind of operation a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `mkdir`.
    Mkdir,
    /// `rmdir`.
    Rmdir,
    /// Attribute writes.
    Write,
    /// `symlink`.
    Symlink,
}

/// An injected failure: the next `count` operations of `op` on a path ending with
/// `path_suffix` fail with `errno`.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Operation.
    pub op: FaultOp,
    /// Path suffix to match (e.g. `np/0.0.0.0:3261` or `attrib/queue_depth`).
    pub path_suffix: String,
    /// Error returned.
    pub errno: Errno,
    /// How many times to fail.
    pub count: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DevState {
    plugin: String,
    params: BTreeMap<String, String>,
    enabled: bool,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Ro,
    Rw,
    Wo,
}

#[derive(Debug, Default)]
struct Spec {
    files: Vec<(String, Mode, String)>,
    dirs: Vec<(String, Spec)>,
}

impl Spec {
    fn file(mut self, name: &str, mode: Mode, content: &str) -> Spec {
        let content = if content.is_empty() || content.ends_with('\n') {
            content.to_owned()
        } else {
            format!("{content}\n")
        };
        self.files.push((name.to_owned(), mode, content));
        self
    }

    fn dir(mut self, name: &str, spec: Spec) -> Spec {
        self.dirs.push((name.to_owned(), spec));
        self
    }

    fn rw(self, name: &str, v: &str) -> Spec {
        self.file(name, Mode::Rw, v)
    }

    fn ro(self, name: &str, v: &str) -> Spec {
        self.file(name, Mode::Ro, v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Root,
    Core,
    Hba(String),
    Device(String),
    AluaGroup { default: bool },
    Fabric(String),
    Target(String),
    Tpg(String),
    Lun,
    Portal,
    Acl(String),
    MappedLun,
    Other,
}

const PLUGINS: [&str; 5] = ["fileio", "iblock", "rd_mcp", "pscsi", "user"];
const FABRICS: [&str; 3] = ["iscsi", "loopback", "vhost"];

fn errno(e: Errno) -> io::Error {
    io::Error::from(e)
}

fn index_of(name: &str, prefix: &str, max: u64) -> Option<u64> {
    let n = name.strip_prefix(prefix)?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse::<u64>().ok().filter(|v| *v <= max)
}

fn sbc_attrib() -> Spec {
    let mut s = Spec::default();
    for (n, v) in [
        ("emulate_model_alias", "1"),
        ("emulate_dpo", "1"),
        ("emulate_fua_write", "1"),
        ("emulate_fua_read", "1"),
        ("emulate_write_cache", "0"),
        ("emulate_ua_intlck_ctrl", "0"),
        ("emulate_tas", "1"),
        ("emulate_tpu", "0"),
        ("emulate_tpws", "0"),
        ("emulate_caw", "1"),
        ("emulate_3pc", "1"),
        ("emulate_pr", "1"),
        ("pi_prot_type", "0"),
        ("pi_prot_format", "0"),
        ("pi_prot_verify", "0"),
        ("enforce_pr_isids", "1"),
        ("is_nonrot", "0"),
        ("emulate_rest_reord", "0"),
        ("force_pr_aptpl", "0"),
        ("block_size", "512"),
        ("optimal_sectors", "16384"),
        ("queue_depth", "128"),
        ("max_unmap_lba_count", "0"),
        ("max_unmap_block_desc_count", "0"),
        ("unmap_granularity", "0"),
        ("unmap_granularity_alignment", "0"),
        ("unmap_zeroes_data", "0"),
        ("max_write_same_len", "0"),
        ("alua_support", "1"),
        ("pgr_support", "1"),
    ] {
        s = s.rw(n, v);
    }
    s.ro("hw_pi_prot_type", "0")
        .ro("hw_block_size", "512")
        .ro("hw_max_sectors", "16384")
        .ro("hw_queue_depth", "128")
}

fn passthrough_attrib(user: bool) -> Spec {
    let s = Spec::default()
        .ro("hw_pi_prot_type", "0")
        .ro("hw_block_size", "512")
        .ro("hw_max_sectors", if user { "128" } else { "1024" })
        .ro("hw_queue_depth", "32")
        .rw("emulate_pr", "1")
        .rw("alua_support", "0")
        .rw("pgr_support", "0");
    if !user {
        return s;
    }
    s.rw("cmd_time_out", "30")
        .rw("qfull_time_out", "-1")
        .rw("max_data_area_mb", "8")
        .rw("data_pages_per_blk", "4")
        .rw("cmd_ring_size_mb", "8")
        .rw("dev_config", "")
        .rw("dev_size", "0")
        .rw("emulate_write_cache", "0")
        .rw("nl_reply_supported", "0")
}

fn alua_group(default: bool) -> Spec {
    Spec::default()
        .rw("alua_access_state", "0")
        .rw("alua_access_status", "None")
        .rw("alua_access_type", "Implicit and Explicit")
        .rw("alua_support_transitioning", "1")
        .rw("alua_support_offline", "1")
        .rw("alua_support_lba_dependent", "0")
        .rw("alua_support_unavailable", "1")
        .rw("alua_support_standby", "1")
        .rw("alua_support_active_optimized", "1")
        .rw("alua_support_active_nonoptimized", "1")
        .rw("alua_write_metadata", "0")
        .rw("nonop_delay_msecs", "100")
        .rw("trans_delay_msecs", "0")
        .rw("implicit_trans_secs", "0")
        .rw("preferred", "0")
        .rw("tg_pt_gp_id", if default { "0" } else { "" })
        .ro("members", "")
}

fn device_spec(plugin: &str, name: &str) -> Spec {
    let attrib = match plugin {
        "pscsi" => passthrough_attrib(false),
        "user" => passthrough_attrib(true),
        _ => sbc_attrib(),
    };
    let product = match plugin {
        "fileio" => "FILEIO",
        "iblock" => "IBLOCK",
        "rd_mcp" => "RAMDISK-MCP",
        "user" => "TCMU device",
        _ => "",
    };
    let model = if product.is_empty() {
        String::new()
    } else {
        name.chars().take(15).collect()
    };
    Spec::default()
        .ro("info", "")
        .file("control", Mode::Wo, "")
        .rw("alias", "")
        .rw("udev_path", "")
        .rw("enable", "0")
        .rw("alua_lu_gp", "")
        .rw("lba_map", "")
        .dir("attrib", attrib)
        .dir(
            "pr",
            Spec::default()
                .ro("res_holder", "No SPC-3 Reservation holder")
                .ro("res_aptpl_active", "0")
                .rw("res_aptpl_metadata", ""),
        )
        .dir(
            "wwn",
            Spec::default()
                .rw("vendor_id", "LIO-ORG")
                .rw("product_id", &model)
                .rw("revision", "4.0")
                .rw("vpd_unit_serial", "T10 VPD Unit Serial Number: ")
                .ro("vpd_protocol_identifier", "")
                .ro("vpd_assoc_logical_unit", ""),
        )
        .dir(
            "alua",
            Spec::default().dir("default_tg_pt_gp", alua_group(true)),
        )
        .dir("statistics", Spec::default())
        .dir("action", Spec::default())
}

const ISCSI_PARAMS: [(&str, &str); 21] = [
    ("AuthMethod", "CHAP,None"),
    ("HeaderDigest", "CRC32C,None"),
    ("DataDigest", "CRC32C,None"),
    ("MaxConnections", "1"),
    ("TargetAlias", "LIO Target"),
    ("InitialR2T", "Yes"),
    ("ImmediateData", "Yes"),
    ("MaxRecvDataSegmentLength", "8192"),
    ("MaxXmitDataSegmentLength", "262144"),
    ("MaxBurstLength", "262144"),
    ("FirstBurstLength", "65536"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "20"),
    ("MaxOutstandingR2T", "1"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("ErrorRecoveryLevel", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("IFMarkInt", "2048~65535"),
    ("OFMarkInt", "2048~65535"),
];

/// A target's `param/` group (every fabric, kernel 5.14+,
/// `target_fabric_wwn_param_attrs`): `cmd_completion_affinity` defaults to -1
/// (`SE_COMPL_AFFINITY_CPUID`, complete on the submitting CPU).
fn target_param_spec() -> Spec {
    Spec::default().rw("cmd_completion_affinity", "-1")
}

/// The online CPUs the fake kernel pretends to have (for `cmd_completion_affinity`).
const FAKE_CPUS: i64 = 4;

/// `cmd_completion_affinity` takes -1 (`SE_COMPL_AFFINITY_CPUID`), -2
/// (`SE_COMPL_AFFINITY_CURR_CPU`) or an online CPU number; anything else is
/// `EINVAL` (`target_fabric_wwn_cmd_completion_affinity_store`).
fn write_completion_affinity(path: &Path, v: &str) -> io::Result<()> {
    match v.parse::<i64>() {
        Ok(n) if n == -1 || n == -2 || (0..FAKE_CPUS).contains(&n) => store(path, &n.to_string()),
        _ => Err(errno(Errno::EINVAL)),
    }
}

fn auth_spec() -> Spec {
    Spec::default()
        .rw("userid", "")
        .rw("password", "")
        .ro("authenticate_target", "0")
        .rw("userid_mutual", "")
        .rw("password_mutual", "")
}

fn tpg_spec(fabric: &str) -> Spec {
    let base = Spec::default()
        .dir("lun", Spec::default())
        .dir("np", Spec::default())
        .dir("acls", Spec::default());
    match fabric {
        "iscsi" => {
            let mut attrib = Spec::default();
            for (n, v) in [
                ("authentication", "1"),
                ("login_timeout", "15"),
                ("netif_timeout", "2"),
                ("generate_node_acls", "0"),
                ("default_cmdsn_depth", "64"),
                ("cache_dynamic_acls", "0"),
                ("demo_mode_write_protect", "1"),
                ("prod_mode_write_protect", "0"),
                ("demo_mode_discovery", "1"),
                ("default_erl", "0"),
                ("t10_pi", "0"),
                ("fabric_prot_type", "0"),
                ("tpg_enabled_sendtargets", "1"),
                ("login_keys_workaround", "1"),
            ] {
                attrib = attrib.rw(n, v);
            }
            let mut param = Spec::default();
            for (n, v) in ISCSI_PARAMS {
                param = param.rw(n, v);
            }
            base.rw("enable", "0")
                .ro("dynamic_sessions", "")
                .dir("attrib", attrib)
                .dir("auth", auth_spec())
                .dir("param", param)
        }
        "loopback" => base
            .rw("nexus", "")
            .rw("transport_status", "online")
            .ro("address", "")
            .dir("attrib", Spec::default().rw("fabric_prot_type", "0"))
            .dir("auth", Spec::default())
            .dir("param", Spec::default()),
        _ => base
            .rw("nexus", "")
            .dir("attrib", Spec::default().rw("fabric_prot_type", "0"))
            .dir("auth", Spec::default())
            .dir("param", Spec::default()),
    }
}

fn acl_spec(fabric: &str, name: &str) -> Spec {
    if fabric != "iscsi" {
        return Spec::default()
            .rw("cmdsn_depth", "1")
            .rw("tag", "")
            .dir("attrib", Spec::default())
            .dir("auth", Spec::default())
            .dir("param", Spec::default())
            .dir("fabric_statistics", Spec::default());
    }
    let mut attrib = Spec::default();
    for (n, v) in [
        ("dataout_timeout", "3"),
        ("dataout_timeout_retries", "5"),
        ("default_erl", "0"),
        ("nopin_timeout", "15"),
        ("nopin_response_timeout", "30"),
        ("random_datain_pdu_offsets", "0"),
        ("random_datain_seq_offsets", "0"),
        ("random_r2t_offsets", "0"),
    ] {
        attrib = attrib.rw(n, v);
    }
    let mut param = Spec::default();
    for (n, v) in ISCSI_PARAMS.iter().take(6) {
        param = param.ro(n, v);
    }
    Spec::default()
        .ro(
            "info",
            &format!("No active iSCSI Session for Initiator Endpoint: {name}"),
        )
        .rw("cmdsn_depth", "64")
        .rw("tag", "")
        .dir("attrib", attrib)
        .dir("auth", auth_spec())
        .dir("param", param)
        .dir("fabric_statistics", Spec::default())
}

fn spec_for(kind: &Kind, name: &str) -> Spec {
    match kind {
        Kind::Hba(plugin) => {
            let idx = name.rsplit_once('_').map(|(_, i)| i).unwrap_or("0");
            Spec::default()
                .ro(
                    "hba_info",
                    &format!("HBA Index: {idx} plugin: {plugin} version: v5.0"),
                )
                .rw("hba_mode", "0")
        }
        Kind::Device(plugin) => device_spec(plugin, name),
        Kind::AluaGroup { default } => alua_group(*default),
        Kind::Fabric(f) if f == "iscsi" => Spec::default()
            .ro("lio_version", "Datera Inc. iSCSI Target v4.1.0")
            .dir(
                "discovery_auth",
                auth_spec().rw("enforce_discovery_auth", "0"),
            ),
        Kind::Fabric(_) => Spec::default().ro("version", "v1.0"),
        Kind::Target(f) if f == "iscsi" => Spec::default()
            .dir("fabric_statistics", Spec::default())
            .dir("param", target_param_spec()),
        Kind::Target(_) => Spec::default().dir("param", target_param_spec()),
        Kind::Tpg(f) => tpg_spec(f),
        Kind::Lun => Spec::default()
            .rw("alua_tg_pt_gp", "")
            .rw("alua_tg_pt_offline", "0")
            .rw("alua_tg_pt_status", "0")
            .rw("alua_tg_pt_write_md", "0")
            .dir("statistics", Spec::default()),
        Kind::Portal => Spec::default().rw("iser", "0"),
        Kind::Acl(f) => acl_spec(f, name),
        Kind::MappedLun => Spec::default()
            .rw("write_protect", "0")
            .dir("statistics", Spec::default()),
        Kind::Root | Kind::Core | Kind::Other => Spec::default(),
    }
}

fn populate(dir: &Path, spec: &Spec) -> io::Result<()> {
    for (name, mode, content) in &spec.files {
        let p = dir.join(name);
        fs::write(&p, content)?;
        let bits = match mode {
            Mode::Ro => 0o444,
            Mode::Rw => 0o644,
            Mode::Wo => 0o200,
        };
        fs::set_permissions(&p, fs::Permissions::from_mode(bits))?;
    }
    for (name, sub) in &spec.dirs {
        let p = dir.join(name);
        fs::create_dir(&p)?;
        populate(&p, sub)?;
    }
    Ok(())
}

/// Lists entries of `dir` that are not part of `spec` (user-created children).
fn extras(dir: &Path, spec: &Spec, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == STATE {
            continue;
        }
        let ft = e.file_type()?;
        if ft.is_dir() {
            match spec.dirs.iter().find(|(n, _)| *n == name) {
                Some((_, sub)) => extras(&e.path(), sub, out)?,
                None => out.push(e.path()),
            }
        } else if ft.is_symlink() || !spec.files.iter().any(|(n, _, _)| *n == name) {
            out.push(e.path());
        }
    }
    Ok(())
}

/// The fake kernel. Create it with [`FakeKernel::new`], then hand it to
/// [`crate::Lio::with_backend`].
#[derive(Debug)]
pub struct FakeKernel {
    root: PathBuf,
    faults: Mutex<Vec<Fault>>,
}

impl FakeKernel {
    /// Lays out an empty LIO tree at `root` (which must not exist yet or be empty).
    pub fn new(root: &Path) -> io::Result<Arc<FakeKernel>> {
        fs::create_dir_all(root)?;
        let root = fs::canonicalize(root)?;
        populate(
            &root,
            &Spec::default()
                .ro(
                    "version",
                    "Target Engine Core ConfigFS Infrastructure v5.0 on Linux/x86_64 (fake)",
                )
                .rw("dbroot", "/etc/target")
                .dir(
                    "core",
                    Spec::default().dir(
                        "alua",
                        Spec::default().dir(
                            "lu_gps",
                            Spec::default().dir(
                                "default_lu_gp",
                                Spec::default().rw("lu_gp_id", "0").ro("members", ""),
                            ),
                        ),
                    ),
                ),
        )?;
        Ok(Arc::new(FakeKernel {
            root,
            faults: Mutex::new(Vec::new()),
        }))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes future operations fail (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Pretends an initiator logged in: replaces an ACL's `info` text.
    pub fn set_acl_info(&self, acl_dir: &Path, text: &str) -> io::Result<()> {
        let p = acl_dir.join("info");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
        fs::write(&p, text)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o444))
    }

    /// Pretends demo-mode initiators are logged in to a TPG (`dynamic_sessions`).
    pub fn set_dynamic_sessions(&self, tpg_dir: &Path, names: &[&str]) -> io::Result<()> {
        let p = tpg_dir.join("dynamic_sessions");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
        let mut text = names.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        fs::write(&p, text)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o444))
    }

    fn fault(&self, op: FaultOp, path: &Path) -> io::Result<()> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let s = path.to_string_lossy();
        if let Some(f) = faults
            .iter_mut()
            .find(|f| f.op == op && f.count > 0 && s.ends_with(&f.path_suffix))
        {
            f.count -= 1;
            return Err(errno(f.errno));
        }
        Ok(())
    }

    fn rel(&self, path: &Path) -> Vec<String> {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(path)
        };
        // Canonicalize the parent so temp-dir symlinks (/tmp -> /private/tmp) agree.
        let canon = match (abs.parent(), abs.file_name()) {
            (Some(p), Some(n)) => fs::canonicalize(p)
                .map(|p| p.join(n))
                .unwrap_or(abs.clone()),
            _ => abs.clone(),
        };
        match canon.strip_prefix(&self.root) {
            Ok(r) => r
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect(),
            Err(_) => vec!["..outside..".to_owned()],
        }
    }

    fn classify(&self, path: &Path) -> Kind {
        let c = self.rel(path);
        let v: Vec<&str> = c.iter().map(String::as_str).collect();
        let hba_plugin = |h: &str| -> Option<String> {
            let (p, i) = h.rsplit_once('_')?;
            (PLUGINS.contains(&p) && i.parse::<u32>().is_ok()).then(|| p.to_owned())
        };
        match v.as_slice() {
            [] => Kind::Root,
            ["core"] => Kind::Core,
            ["core", h] => hba_plugin(h).map(Kind::Hba).unwrap_or(Kind::Other),
            ["core", h, _] => hba_plugin(h).map(Kind::Device).unwrap_or(Kind::Other),
            ["core", h, _, "alua", g] if hba_plugin(h).is_some() => Kind::AluaGroup {
                default: *g == "default_tg_pt_gp",
            },
            [f] if FABRICS.contains(f) => Kind::Fabric((*f).to_owned()),
            [f, _] if FABRICS.contains(f) => Kind::Target((*f).to_owned()),
            [f, _, t] if FABRICS.contains(f) && t.starts_with("tpgt_") => {
                Kind::Tpg((*f).to_owned())
            }
            [f, _, t, "lun", _] if FABRICS.contains(f) && t.starts_with("tpgt_") => Kind::Lun,
            [f, _, t, "np", _] if FABRICS.contains(f) && t.starts_with("tpgt_") => Kind::Portal,
            [f, _, t, "acls", _] if FABRICS.contains(f) && t.starts_with("tpgt_") => {
                Kind::Acl((*f).to_owned())
            }
            [f, _, t, "acls", _, m]
                if FABRICS.contains(f) && t.starts_with("tpgt_") && m.starts_with("lun_") =>
            {
                Kind::MappedLun
            }
            _ => Kind::Other,
        }
    }

    fn check_name(&self, kind: &Kind, name: &str, path: &Path) -> io::Result<()> {
        let ok = match kind {
            Kind::Hba(_) | Kind::Device(_) | Kind::AluaGroup { .. } => !name.is_empty(),
            Kind::Fabric(_) => true,
            Kind::Target(f) => {
                let prefixes: &[&str] = if f == "iscsi" {
                    &["iqn.", "eui.", "naa."]
                } else {
                    &["naa.", "fc.", "iqn."]
                };
                name.len() <= 223 && prefixes.iter().any(|p| name.starts_with(p))
            }
            Kind::Tpg(_) => index_of(name, "tpgt_", 65535).is_some(),
            Kind::Lun | Kind::MappedLun => index_of(name, "lun_", 65535).is_some(),
            Kind::Portal => {
                let comps = self.rel(path);
                comps.first().map(String::as_str) == Some("iscsi")
                    && crate::addr::parse_portal(name).is_some_and(|(ip, port)| {
                        port <= 65535 && rustio_config::validate::check_portal_address(&ip).is_ok()
                    })
            }
            Kind::Acl(_) => name.len() <= 223,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(errno(Errno::EINVAL))
        }
    }

    fn state_path(dev: &Path) -> PathBuf {
        dev.join(STATE)
    }

    fn load_state(dev: &Path) -> io::Result<DevState> {
        let text = fs::read_to_string(Self::state_path(dev))?;
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn save_state(dev: &Path, st: &DevState) -> io::Result<()> {
        let text =
            serde_json::to_string(st).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        fs::write(Self::state_path(dev), text)
    }

    /// Links `(link, canonical target)` found in every TPG LUN and mapped LUN.
    fn all_links(&self) -> Vec<(PathBuf, PathBuf)> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_symlink() {
                    if let Ok(t) = fs::canonicalize(e.path()) {
                        out.push((e.path(), t));
                    }
                } else if ft.is_dir() && e.file_name() != "core" {
                    stack.push(e.path());
                }
            }
        }
        out
    }

    fn exported(&self, dev: &Path) -> bool {
        let Ok(canon) = fs::canonicalize(dev) else {
            return false;
        };
        self.all_links().iter().any(|(_, t)| *t == canon)
    }

    fn attr(dev: &Path, name: &str) -> String {
        fs::read_to_string(dev.join("attrib").join(name))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }

    fn device_info(&self, dev: &Path) -> io::Result<String> {
        let st = Self::load_state(dev)?;
        let p = |k: &str| st.params.get(k).cloned();
        let status = if self.exported(dev) {
            "ACTIVATED"
        } else {
            "DEACTIVATED"
        };
        let mut s = format!(
            "Status: {status}  Max Queue Depth: {}  SectorSize: {}  HwMaxSectors: {}\n        ",
            Self::attr(dev, "queue_depth").parse::<u64>().unwrap_or(32),
            Self::attr(dev, "block_size").parse::<u64>().unwrap_or(512),
            Self::attr(dev, "hw_max_sectors")
        );
        match st.plugin.as_str() {
            "fileio" => {
                let mode = if p("fd_buffered_io").as_deref() == Some("1") {
                    "Buffered-WCE"
                } else {
                    "O_DSYNC"
                };
                s.push_str(&format!(
                    "TCM FILEIO ID: 0        File: {}  Size: {}  Mode: {mode} Async: {}\n",
                    p("fd_dev_name").unwrap_or_default(),
                    p("fd_dev_size").unwrap_or_else(|| "0".into()),
                    u8::from(p("fd_async_io").as_deref() == Some("1"))
                ));
            }
            "iblock" => {
                let path = p("udev_path").unwrap_or_default();
                if st.enabled {
                    let name = Path::new(&path)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    s.push_str(&format!("iBlock device: {name}"));
                }
                if !path.is_empty() {
                    s.push_str(&format!("  UDEV PATH: {path}"));
                }
                s.push_str(&format!(
                    "  readonly: {}\n        Major: 0 Minor: 0\n",
                    p("readonly").unwrap_or_else(|| "0".into())
                ));
            }
            "rd_mcp" => {
                s.push_str(&format!(
                    "TCM RamDisk ID: 0  RamDisk Makeup: rd_mcp\n        PAGES/PAGE_SIZE: {}*{}  SG_table_count: 1  nullio: {}\n",
                    p("rd_pages").unwrap_or_else(|| "0".into()),
                    crate::sys::page_size(),
                    u8::from(p("rd_nullio").as_deref() == Some("1"))
                ));
            }
            "pscsi" => {
                s.push_str(&format!(
                    "SCSI Device Bus Location: Channel ID: {} Target ID: {} LUN: {} Host ID: {}\n        Vendor: FAKE Model: DISK Rev: 1.0\n",
                    p("scsi_channel_id").unwrap_or_default(),
                    p("scsi_target_id").unwrap_or_default(),
                    p("scsi_lun_id").unwrap_or_default(),
                    p("scsi_host_id").unwrap_or_default()
                ));
            }
            _ => {
                s.push_str(&format!(
                    "Config: {} Size: {} MaxDataAreaMB: {} DataPagesPerBlk: {}\n",
                    p("dev_config").unwrap_or_else(|| "NULL".into()),
                    p("dev_size").unwrap_or_else(|| "0".into()),
                    p("max_data_area_mb").unwrap_or_else(|| "8".into()),
                    p("data_pages_per_blk").unwrap_or_else(|| "4".into())
                ));
            }
        }
        Ok(s)
    }

    fn force_write(path: &Path, content: &str) -> io::Result<()> {
        let meta = fs::metadata(path)?;
        let mode = meta.permissions().mode();
        fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
        let r = fs::write(path, content);
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        r
    }

    fn enable_device(&self, dev: &Path) -> io::Result<()> {
        let mut st = Self::load_state(dev)?;
        if st.enabled {
            return Err(errno(Errno::EEXIST));
        }
        let p = |k: &str| st.params.get(k).cloned();
        match st.plugin.as_str() {
            "fileio" => {
                let name = p("fd_dev_name").ok_or_else(|| errno(Errno::EINVAL))?;
                let path = Path::new(&name);
                match fs::metadata(path) {
                    Ok(m) if m.is_dir() => return Err(errno(Errno::EINVAL)),
                    Ok(_) => {
                        if p("fd_dev_size").is_none() {
                            return Err(errno(Errno::EINVAL));
                        }
                    }
                    Err(_) => {
                        // The kernel opens with O_CREAT.
                        if p("fd_dev_size").is_none() {
                            return Err(errno(Errno::EINVAL));
                        }
                        fs::File::create(path).map_err(|_| errno(Errno::ENOENT))?;
                    }
                }
            }
            "iblock" => {
                let name = p("udev_path").ok_or_else(|| errno(Errno::EINVAL))?;
                if !Path::new(&name).exists() {
                    return Err(errno(Errno::ENOENT));
                }
            }
            "rd_mcp" => {
                if p("rd_pages")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    == 0
                {
                    return Err(errno(Errno::EINVAL));
                }
            }
            "pscsi" => {
                if p("scsi_host_id").is_none() {
                    return Err(errno(Errno::EINVAL));
                }
            }
            _ => {
                if p("dev_config").is_none() || p("dev_size").is_none() {
                    return Err(errno(Errno::EINVAL));
                }
                if let Some(h) = p("hw_max_sectors") {
                    Self::force_write(&dev.join("attrib/hw_max_sectors"), &format!("{h}\n"))?;
                }
                if let Some(h) = p("hw_block_size") {
                    Self::force_write(&dev.join("attrib/hw_block_size"), &format!("{h}\n"))?;
                }
                for k in [
                    "dev_config",
                    "dev_size",
                    "max_data_area_mb",
                    "data_pages_per_blk",
                ] {
                    if let Some(v) = p(k) {
                        fs::write(dev.join("attrib").join(k), format!("{v}\n"))?;
                    }
                }
            }
        }
        st.enabled = true;
        Self::save_state(dev, &st)?;
        fs::write(dev.join("enable"), "1\n")
    }

    /// A storage object's own files: `control` (rejects identity changes once
    /// enabled) and `enable`.
    fn write_device_file(&self, path: &Path, file: &str, text: &str) -> io::Result<()> {
        let dev = path.parent().unwrap_or(Path::new("/"));
        match file {
            "control" => {
                let mut st = Self::load_state(dev)?;
                for tok in text
                    .split([',', '\n'])
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                {
                    let (k, val) = tok.split_once('=').ok_or_else(|| errno(Errno::EINVAL))?;
                    if st.enabled
                        && matches!(k, "fd_dev_name" | "udev_path" | "rd_pages" | "dev_config")
                    {
                        return Err(errno(Errno::EEXIST));
                    }
                    st.params.insert(k.to_owned(), val.to_owned());
                }
                Self::save_state(dev, &st)
            }
            "enable" => {
                if !text.trim().contains('1') {
                    return Err(errno(Errno::EINVAL));
                }
                self.enable_device(dev)
            }
            _ => store(path, text.trim()),
        }
    }

    /// Files in a storage object's `wwn/` and `attrib/`.
    fn write_device_group_file(
        &self,
        path: &Path,
        group: &str,
        file: &str,
        v: &str,
    ) -> io::Result<()> {
        let dev = path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"));
        match group {
            "wwn" if file == "vpd_unit_serial" => {
                // SPC-4 7.8.15: the kernel keeps the serial in a 254-byte buffer.
                if v.len() >= 254 {
                    return Err(errno(Errno::EOVERFLOW));
                }
                if self.exported(dev) {
                    return Err(errno(Errno::EINVAL));
                }
                store(path, &format!("T10 VPD Unit Serial Number: {v}"))
            }
            "attrib" => {
                let cur = fs::read_to_string(path).unwrap_or_default();
                if cur.trim().parse::<i64>().is_ok()
                    || cur.trim().is_empty() && file != "dev_config"
                {
                    Self::check_numeric(file, v)?;
                }
                store(path, v)
            }
            _ => store(path, v),
        }
    }

    /// CHAP files (`auth/`, `discovery_auth/`); setting both mutual values turns
    /// `authenticate_target` on.
    fn write_auth_file(path: &Path, file: &str, v: &str) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        if v.len() > 255 {
            return Err(errno(Errno::EINVAL));
        }
        store(path, v)?;
        if file == "enforce_discovery_auth" {
            if v != "0" && v != "1" {
                return Err(errno(Errno::EINVAL));
            }
            return Ok(());
        }
        let set = |f: &str| {
            fs::read_to_string(dir.join(f))
                .map(|s| {
                    let s = s.trim().to_owned();
                    !s.is_empty() && s != "NULL"
                })
                .unwrap_or(false)
        };
        let mutual = set("userid_mutual") && set("password_mutual");
        Self::force_write(
            &dir.join("authenticate_target"),
            if mutual { "1\n" } else { "0\n" },
        )
    }

    fn check_numeric(name: &str, value: &str) -> io::Result<()> {
        let v = value.trim();
        let n: i64 = v.parse().map_err(|_| errno(Errno::EINVAL))?;
        match name {
            "block_size" if ![512, 1024, 2048, 4096].contains(&n) => Err(errno(Errno::EINVAL)),
            "emulate_rest_reord" if n != 0 => Err(errno(Errno::ENOSYS)),
            "queue_depth" if n == 0 => Err(errno(Errno::EINVAL)),
            _ => Ok(()),
        }
    }
}

/// Stores a value the way configfs shows it, newline-terminated.
fn store(path: &Path, content: &str) -> io::Result<()> {
    fs::write(path, format!("{content}\n"))
}

/// The word for a numeric ALUA value, `EINVAL` when out of the table.
fn alua_word(table: &[&str], n: u64) -> io::Result<String> {
    usize::try_from(n)
        .ok()
        .and_then(|i| table.get(i))
        .map(|w| (*w).to_owned())
        .ok_or_else(|| errno(Errno::EINVAL))
}

/// An ALUA group's files (SPC-4 6.37): numbers, type and status shown as words.
fn write_alua_setting(path: &Path, file: &str, v: &str) -> io::Result<()> {
    let n: u64 = v.parse().map_err(|_| errno(Errno::EINVAL))?;
    match file {
        "tg_pt_gp_id" if n > 65535 => Err(errno(Errno::EINVAL)),
        "alua_access_type" => store(path, &alua_word(&crate::read::ALUA_TYPES, n)?),
        "alua_access_status" => store(path, &alua_word(&crate::read::ALUA_STATUSES, n)?),
        // SPC-4 6.37 table 290: the asymmetric access states.
        "alua_access_state" if ![0, 1, 2, 3, 4, 14, 15].contains(&n) => Err(errno(Errno::EINVAL)),
        f if (f.starts_with("alua_support_") || f == "preferred" || f == "alua_write_metadata")
            && n > 1 =>
        {
            Err(errno(Errno::EINVAL))
        }
        _ => store(path, v),
    }
}

/// Flags and one-shot values of TPGs, portals, mapped LUNs, ACLs and LUNs; `None`
/// when `file` is none of them.
fn write_object_file(path: &Path, kind: &Kind, file: &str, v: &str) -> Option<io::Result<()>> {
    Some(match (kind, file) {
        (Kind::Tpg(_), "enable") | (Kind::Portal, "iser") | (Kind::MappedLun, "write_protect") => {
            if v != "0" && v != "1" {
                return Some(Err(errno(Errno::EINVAL)));
            }
            store(path, v)
        }
        (Kind::Tpg(_), "nexus") => write_nexus(path, v),
        (Kind::Acl(_), "tag") => store(path, if v == "NULL" { "" } else { v }),
        (Kind::Lun, "alua_tg_pt_gp") => write_lun_alua_group(path, v),
        _ => return None,
    })
}

/// A TPG's nexus can be set once, to a naa., fc. or iqn. name.
fn write_nexus(path: &Path, v: &str) -> io::Result<()> {
    let cur = fs::read_to_string(path).unwrap_or_default();
    if !cur.trim().is_empty() {
        return Err(errno(Errno::EEXIST));
    }
    if !(v.starts_with("naa.") || v.starts_with("fc.") || v.starts_with("iqn.")) {
        return Err(errno(Errno::EINVAL));
    }
    store(path, v)
}

/// Moves a LUN to an ALUA group of the storage object it links to (`ENODEV` when
/// there is no such group).
fn write_lun_alua_group(path: &Path, v: &str) -> io::Result<()> {
    let lun = path.parent().unwrap_or(Path::new("/"));
    let link = fs::read_dir(lun)?
        .flatten()
        .find(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .and_then(|e| fs::canonicalize(e.path()).ok())
        .ok_or_else(|| errno(Errno::ENODEV))?;
    let gdir = link.join("alua").join(v);
    if !gdir.is_dir() {
        return Err(errno(Errno::ENODEV));
    }
    let id = fs::read_to_string(gdir.join("tg_pt_gp_id")).unwrap_or_default();
    store(
        path,
        &format!(
            "TG Port Alias: {v}\nTG Port Group ID: {}\nTG Port Primary Access State: Active/Optimized",
            id.trim()
        ),
    )
}

impl Backend for FakeKernel {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.fault(FaultOp::Mkdir, path)?;
        let parent = path.parent().ok_or_else(|| errno(Errno::EINVAL))?;
        if !parent.is_dir() {
            return Err(errno(Errno::ENOENT));
        }
        if path.exists() {
            return Err(errno(Errno::EEXIST));
        }
        let kind = self.classify(path);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if matches!(kind, Kind::Other | Kind::Root | Kind::Core) {
            // configfs only allows mkdir where a group has make_group.
            if matches!(self.classify(parent), Kind::Core) {
                return Err(errno(Errno::EINVAL));
            }
            return Err(errno(Errno::EPERM));
        }
        if matches!(kind, Kind::AluaGroup { default: true }) {
            return Err(errno(Errno::EEXIST));
        }
        self.check_name(&kind, &name, path)?;
        fs::create_dir(path)?;
        let r = populate(path, &spec_for(&kind, &name)).and_then(|_| {
            if let Kind::Device(plugin) = &kind {
                Self::save_state(
                    path,
                    &DevState {
                        plugin: plugin.clone(),
                        ..DevState::default()
                    },
                )
            } else {
                Ok(())
            }
        });
        if r.is_err() {
            let _ = fs::remove_dir_all(path);
        }
        r
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        self.fault(FaultOp::Rmdir, path)?;
        if !path.is_dir() {
            return Err(errno(Errno::ENOENT));
        }
        let kind = self.classify(path);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match kind {
            Kind::Other | Kind::Root | Kind::Core | Kind::AluaGroup { default: true } => {
                return Err(errno(Errno::EPERM))
            }
            Kind::Device(_) | Kind::Lun => {
                let canon = fs::canonicalize(path)?;
                if self.all_links().iter().any(|(_, t)| *t == canon) {
                    return Err(errno(Errno::EBUSY));
                }
            }
            _ => {}
        }
        let mut extra = Vec::new();
        extras(path, &spec_for(&kind, &name), &mut extra)?;
        if !extra.is_empty() {
            return Err(errno(Errno::ENOTEMPTY));
        }
        fs::remove_dir_all(path)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        let meta = fs::metadata(path)?;
        if meta.is_dir() {
            return Err(errno(Errno::EISDIR));
        }
        if meta.permissions().mode() & 0o400 == 0 {
            return Err(errno(Errno::EACCES));
        }
        let parent = path.parent().unwrap_or(Path::new("/"));
        if path.file_name().is_some_and(|n| n == "info")
            && matches!(self.classify(parent), Kind::Device(_))
        {
            return self.device_info(parent);
        }
        let bytes = fs::read(path)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn write(&self, path: &Path, value: &[u8]) -> io::Result<()> {
        self.fault(FaultOp::Write, path)?;
        let meta = fs::metadata(path)?;
        if meta.is_dir() {
            return Err(errno(Errno::EISDIR));
        }
        if meta.permissions().mode() & 0o200 == 0 {
            return Err(errno(Errno::EACCES));
        }
        let text = String::from_utf8_lossy(value).into_owned();
        let v = text.trim();
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new("/"));
        let parent_name = parent
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let grandparent = parent.parent().unwrap_or(Path::new("/"));
        let pkind = self.classify(parent);
        if let Kind::Device(_) = pkind {
            return self.write_device_file(path, &file, &text);
        }
        if matches!(self.classify(grandparent), Kind::Device(_)) {
            return self.write_device_group_file(path, &parent_name, &file, v);
        }
        if let Kind::AluaGroup { .. } = pkind {
            return write_alua_setting(path, &file, v);
        }
        if let Some(r) = write_object_file(path, &pkind, &file, v) {
            return r;
        }
        if parent_name == "param"
            && file == "cmd_completion_affinity"
            && matches!(self.classify(grandparent), Kind::Target(_))
        {
            return write_completion_affinity(path, v);
        }
        if parent_name == "auth" || parent_name == "discovery_auth" {
            return Self::write_auth_file(path, &file, v);
        }
        if parent_name == "attrib" {
            Self::check_numeric(&file, v)?;
        }
        store(path, v)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.fault(FaultOp::Symlink, link)?;
        let dir = link.parent().ok_or_else(|| errno(Errno::EINVAL))?;
        let tcanon = fs::canonicalize(target).map_err(|_| errno(Errno::ENOENT))?;
        match self.classify(dir) {
            Kind::Lun => {
                if !matches!(self.classify(&tcanon), Kind::Device(_)) {
                    return Err(errno(Errno::EINVAL));
                }
                if !Self::load_state(&tcanon)?.enabled {
                    return Err(errno(Errno::ENODEV));
                }
                let has_link = fs::read_dir(dir)?
                    .flatten()
                    .any(|e| e.file_type().is_ok_and(|t| t.is_symlink()));
                if has_link {
                    return Err(errno(Errno::EEXIST));
                }
                std::os::unix::fs::symlink(&tcanon, link)?;
                if Self::attr(&tcanon, "alua_support") != "0" {
                    fs::write(
                        dir.join("alua_tg_pt_gp"),
                        "TG Port Alias: default_tg_pt_gp\nTG Port Group ID: 0\nTG Port Primary Access State: Active/Optimized\n",
                    )?;
                }
                Ok(())
            }
            Kind::MappedLun => {
                if !matches!(self.classify(&tcanon), Kind::Lun) {
                    return Err(errno(Errno::EINVAL));
                }
                // Same TPG: .../tpgt_N/acls/<wwn>/lun_M vs .../tpgt_N/lun/lun_K.
                let dir_canon = fs::canonicalize(dir)?;
                let tpg_of_link = dir_canon
                    .parent()
                    .and_then(Path::parent)
                    .and_then(Path::parent);
                let tpg_of_target = tcanon.parent().and_then(Path::parent);
                if tpg_of_link != tpg_of_target {
                    return Err(errno(Errno::EINVAL));
                }
                std::os::unix::fs::symlink(&tcanon, link)
            }
            _ => Err(errno(Errno::EPERM)),
        }
    }

    fn unlink(&self, link: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(link)?;
        if !meta.file_type().is_symlink() {
            return Err(errno(Errno::EPERM));
        }
        fs::remove_file(link)?;
        if let Some(dir) = link.parent() {
            if matches!(self.classify(dir), Kind::Lun) {
                fs::write(dir.join("alua_tg_pt_gp"), "")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alua_words_follow_the_kernel_tables() {
        // target_core_configfs: alua_access_type 0-3, alua_access_status 0-2 as words.
        assert_eq!(
            alua_word(&crate::read::ALUA_TYPES, 3).ok().as_deref(),
            Some("Implicit and Explicit")
        );
        assert_eq!(
            alua_word(&crate::read::ALUA_STATUSES, 1).ok().as_deref(),
            Some("Altered by Explicit STPG")
        );
        assert!(alua_word(&crate::read::ALUA_TYPES, 4).is_err());
        assert!(alua_word(&crate::read::ALUA_STATUSES, u64::MAX).is_err());
    }

    #[test]
    fn completion_affinity_takes_the_kernels_values_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cmd_completion_affinity");
        // -1 SE_COMPL_AFFINITY_CPUID, -2 SE_COMPL_AFFINITY_CURR_CPU, or an online CPU.
        for ok in ["-1", "-2", "0", "3"] {
            write_completion_affinity(&p, ok).unwrap();
            assert_eq!(fs::read_to_string(&p).unwrap().trim(), ok);
        }
        for bad in ["-3", "4", "x", ""] {
            let e = write_completion_affinity(&p, bad).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(Errno::EINVAL as i32), "{bad}");
        }
    }

    #[test]
    fn only_object_flags_are_claimed_by_write_object_file() {
        let p = Path::new("/nonexistent/file");
        assert!(write_object_file(p, &Kind::Portal, "cxgbit", "1").is_none());
        assert!(write_object_file(p, &Kind::Other, "enable", "1").is_none());
        let bad = write_object_file(p, &Kind::MappedLun, "write_protect", "2");
        assert!(matches!(bad, Some(Err(e)) if e.raw_os_error() == Some(Errno::EINVAL as i32)));
    }

    fn kernel() -> (tempfile::TempDir, Arc<FakeKernel>) {
        let dir = tempfile::tempdir().unwrap();
        let k = FakeKernel::new(&dir.path().join("target")).unwrap();
        (dir, k)
    }

    fn code(e: io::Error) -> Option<i32> {
        e.raw_os_error()
    }

    #[test]
    fn mkdir_populates_and_rmdir_cleans_up() {
        let (_d, k) = kernel();
        let hba = k.root().join("core/fileio_3");
        k.mkdir(&hba).unwrap();
        assert_eq!(
            k.read(&hba.join("hba_info")).unwrap(),
            "HBA Index: 3 plugin: fileio version: v5.0\n"
        );
        let dev = hba.join("d");
        k.mkdir(&dev).unwrap();
        assert_eq!(k.read(&dev.join("attrib/block_size")).unwrap(), "512\n");
        assert!(dev.join("alua/default_tg_pt_gp/tg_pt_gp_id").is_file());
        // The HBA is not empty while the device exists.
        assert_eq!(
            code(k.rmdir(&hba).unwrap_err()),
            Some(Errno::ENOTEMPTY as i32)
        );
        k.rmdir(&dev).unwrap();
        k.rmdir(&hba).unwrap();
        assert!(!hba.exists());
    }

    #[test]
    fn kernel_refusals() {
        let (_d, k) = kernel();
        let core = k.root().join("core");
        assert_eq!(
            code(k.mkdir(&core.join("bogus")).unwrap_err()),
            Some(Errno::EINVAL as i32)
        );
        assert_eq!(
            code(k.mkdir(&core.join("fileio_x")).unwrap_err()),
            Some(Errno::EINVAL as i32)
        );
        k.mkdir(&k.root().join("iscsi")).unwrap();
        assert_eq!(
            code(k.mkdir(&k.root().join("iscsi/target1")).unwrap_err()),
            Some(Errno::EINVAL as i32)
        );
        let t = k.root().join("iscsi/iqn.2003-01.org.x:y");
        k.mkdir(&t).unwrap();
        assert_eq!(
            code(k.mkdir(&t.join("tpgt_x")).unwrap_err()),
            Some(Errno::EINVAL as i32)
        );
        k.mkdir(&t.join("tpgt_1")).unwrap();
        let tpg = t.join("tpgt_1");
        assert_eq!(
            code(k.mkdir(&tpg.join("np/nope")).unwrap_err()),
            Some(Errno::EINVAL as i32)
        );
        assert_eq!(
            code(k.mkdir(&tpg.join("lun/lun_70000")).unwrap_err()),
            Some(Errno::EINVAL as i32)
        );
        assert_eq!(
            code(k.mkdir(&tpg.join("attrib/x")).unwrap_err()),
            Some(Errno::EPERM as i32)
        );
        // Read-only and write-only files.
        assert_eq!(
            code(k.write(&tpg.join("dynamic_sessions"), b"x").unwrap_err()),
            Some(Errno::EACCES as i32)
        );
        assert_eq!(
            code(
                k.write(&tpg.join("attrib/login_timeout"), b"soon")
                    .unwrap_err()
            ),
            Some(Errno::EINVAL as i32)
        );
        assert_eq!(
            code(k.write(&tpg.join("enable"), b"2").unwrap_err()),
            Some(Errno::EINVAL as i32)
        );
        k.write(&tpg.join("enable"), b"1").unwrap();
        assert_eq!(k.read(&tpg.join("enable")).unwrap(), "1\n");
    }

    #[test]
    fn device_enable_and_links() {
        let (d, k) = kernel();
        let dev = k.root().join("core/fileio_0/d");
        k.mkdir(&k.root().join("core/fileio_0")).unwrap();
        k.mkdir(&dev).unwrap();
        assert_eq!(
            code(k.read(&dev.join("control")).unwrap_err()),
            Some(Errno::EACCES as i32)
        );
        let missing = d.path().join("nodir/file");
        k.write(
            &dev.join("control"),
            format!("fd_dev_name={},fd_dev_size=4096", missing.display()).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            code(k.write(&dev.join("enable"), b"1").unwrap_err()),
            Some(Errno::ENOENT as i32)
        );
        let file = d.path().join("file");
        k.write(
            &dev.join("control"),
            format!("fd_dev_name={}", file.display()).as_bytes(),
        )
        .unwrap();
        k.write(&dev.join("enable"), b"1").unwrap();
        assert!(file.exists(), "O_CREAT");
        assert_eq!(
            code(k.write(&dev.join("enable"), b"1").unwrap_err()),
            Some(Errno::EEXIST as i32)
        );
        let info = k.read(&dev.join("info")).unwrap();
        assert!(info.starts_with("Status: DEACTIVATED"), "{info}");
        assert!(info.contains("Size: 4096  Mode: O_DSYNC"), "{info}");

        k.mkdir(&k.root().join("loopback")).unwrap();
        let tpg = k.root().join("loopback/naa.5001405000000001/tpgt_1");
        k.mkdir(tpg.parent().unwrap()).unwrap();
        k.mkdir(&tpg).unwrap();
        k.write(&tpg.join("nexus"), b"naa.5001405000000002")
            .unwrap();
        assert_eq!(
            code(
                k.write(&tpg.join("nexus"), b"naa.5001405000000003")
                    .unwrap_err()
            ),
            Some(Errno::EEXIST as i32)
        );
        let lun = tpg.join("lun/lun_0");
        k.mkdir(&lun).unwrap();
        assert_eq!(
            code(k.symlink(&tpg, &lun.join("x")).unwrap_err()),
            Some(Errno::EINVAL as i32)
        );
        k.symlink(&dev, &lun.join("x")).unwrap();
        assert!(k
            .read(&dev.join("info"))
            .unwrap()
            .starts_with("Status: ACTIVATED"));
        // Exported: no serial change, no removal.
        assert_eq!(
            code(
                k.write(&dev.join("wwn/vpd_unit_serial"), b"abc")
                    .unwrap_err()
            ),
            Some(Errno::EINVAL as i32)
        );
        assert_eq!(code(k.rmdir(&dev).unwrap_err()), Some(Errno::EBUSY as i32));
        assert_eq!(
            code(k.rmdir(&lun).unwrap_err()),
            Some(Errno::ENOTEMPTY as i32)
        );
        k.unlink(&lun.join("x")).unwrap();
        k.rmdir(&lun).unwrap();
        k.write(&dev.join("wwn/vpd_unit_serial"), b"abc").unwrap();
        assert_eq!(
            k.read(&dev.join("wwn/vpd_unit_serial")).unwrap(),
            "T10 VPD Unit Serial Number: abc\n"
        );
        k.rmdir(&dev).unwrap();
    }

    #[test]
    fn faults_fire_the_requested_number_of_times() {
        let (_d, k) = kernel();
        k.inject(Fault {
            op: FaultOp::Mkdir,
            path_suffix: "core/rd_mcp_0".into(),
            errno: Errno::EEXIST,
            count: 1,
        });
        let p = k.root().join("core/rd_mcp_0");
        assert_eq!(code(k.mkdir(&p).unwrap_err()), Some(Errno::EEXIST as i32));
        k.mkdir(&p).unwrap();
    }
}
