//! Implementations of the mutating commands and of save/restore/apply.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rustio_config::fabric::{fabric_info, FabricInfo, WwnType};
use rustio_config::model::Common;
use rustio_config::store::{self, DEFAULT_SAVE_FILE};
use rustio_config::validate::{check_storage_object_name, validate};
use rustio_config::{
    AluaTpg, BlockObject, Chap, ConfigValue, FileioObject, PscsiObject, RamdiskObject, SaveConfig,
    StorageObject, UserObject,
};

use super::progress::Progress;
use super::{
    out_err, ApplyArgs, BackstoreKind, ClearArgs, CreateWhat, DeleteArgs, RestoreArgs, SaveArgs,
    SetWhat,
};
use crate::addr::{
    parse_lun_component, AclRef, AluaRef, LunRef, MappedLunRef, ObjectPath, PortalRef, SoRef,
    TargetRef, TpgRef,
};
use crate::error::{Error, Result};
use crate::human::{format_size, parse_size};
use crate::ops::{AttrOwner, AuthOwner, Op, PortalFlag};
use crate::plan::{diff, Plan};
use crate::Lio;

/// Output streams and the tree a command works on.
pub(crate) struct Ctx<'a> {
    pub lio: &'a Lio,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

macro_rules! say {
    ($ctx:expr, $($t:tt)*) => {
        writeln!($ctx.out, $($t)*).map_err(out_err)?
    };
}

fn run(ctx: &mut Ctx<'_>, ops: Vec<Op>) -> Result<usize> {
    run_plan(ctx, &Plan { ops })
}

/// Runs a plan (rolled back on failure); returns how many steps were applied.
fn run_plan(ctx: &mut Ctx<'_>, plan: &Plan) -> Result<usize> {
    run_plan_shown(ctx, plan, "applying")
}

/// [`run_plan`] with a bar of steps done out of the plan's length on a terminal
/// ([`Progress::steps`]; `what` labels it), for the long plans of restore and apply.
fn run_plan_shown(ctx: &mut Ctx<'_>, plan: &Plan, what: &str) -> Result<usize> {
    let bar = Progress::steps(plan.ops.len(), what);
    let applied = ctx.lio.run_plan(plan, &mut |i, op| {
        // `i` is the 1-based step about to run: the ones before it are done.
        bar.set(u64::try_from(i.saturating_sub(1)).unwrap_or(u64::MAX));
        tracing::debug!(step = i, "{op}")
    })?;
    Ok(applied.steps)
}

fn parse_path(s: &str) -> Result<ObjectPath> {
    s.parse()
}

fn wrong_kind(path: &str, want: &str) -> Error {
    Error::rule(
        format!("this command takes the path of {want}"),
        format!("{path:?} is not {want}"),
    )
}

fn tpg_of(path: &str) -> Result<TpgRef> {
    match parse_path(path)? {
        ObjectPath::Tpg(t) => Ok(t),
        ObjectPath::Target(t) if fabric_info(&t.fabric).is_some_and(|i| !i.tpgts) => {
            Ok(TpgRef { target: t, tag: 1 })
        }
        _ => Err(wrong_kind(path, "a TPG (/<fabric>/<wwn>/tpg<N>)")),
    }
}

fn so_of(path: &str) -> Result<SoRef> {
    match parse_path(path)? {
        ObjectPath::StorageObject(s) => Ok(s),
        _ => Err(wrong_kind(
            path,
            "a storage object (/backstores/<plugin>/<name>)",
        )),
    }
}

fn managed_fabric(name: &str) -> Result<&'static FabricInfo> {
    match fabric_info(name) {
        Some(i)
            if rustio_config::fabric::MANAGED_FABRICS
                .iter()
                .any(|m| m.name == i.name) =>
        {
            Ok(i)
        }
        _ => Err(Error::rule(
            "rustio creates targets on the iscsi, loopback and vhost fabrics",
            format!("fabric {name:?} is not one of them"),
        )),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|source| Error::Io {
        op: "find the current directory for",
        path: p.to_path_buf(),
        source,
    })?;
    Ok(cwd.join(p))
}

fn toggle(v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" | "enable" | "enabled" => Ok(true),
        "0" | "off" | "false" | "no" | "disable" | "disabled" => Ok(false),
        _ => Err(Error::rule(
            "flags are 1/0, on/off, true/false or yes/no",
            format!("{v:?}"),
        )),
    }
}

fn key_values(settings: &[String]) -> Result<Vec<(String, String)>> {
    settings
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    Error::rule(
                        "settings are written name=value",
                        format!("{s:?} has no '='"),
                    )
                })
        })
        .collect()
}

/// Lowercases the type prefix and body of iSCSI names (RFC 3722 maps them to lowercase,
/// and rtslib stores them lowercased).
fn normalize_wwn(fabric: &str, wwn: &str) -> String {
    let lower = wwn.to_ascii_lowercase();
    let iscsi_name = fabric == "iscsi" && (lower.starts_with("iqn.") || lower.starts_with("eui."));
    if iscsi_name || lower.starts_with("naa.") {
        lower
    } else {
        wwn.to_owned()
    }
}

fn generate_wwn(info: &FabricInfo) -> Result<String> {
    match info.wwn_types.first() {
        Some(WwnType::Iqn) => crate::sys::generate_iqn(),
        Some(WwnType::Naa) => crate::sys::generate_naa(),
        _ => Err(Error::rule(
            "WWNs are generated for iSCSI (iqn) and loopback/vhost (naa) only",
            format!("give a WWN for fabric {}", info.name),
        )),
    }
}

fn tpg_create_ops(
    live: &SaveConfig,
    info: &FabricInfo,
    tpg: &TpgRef,
    portal: bool,
    enable: bool,
    notes: &mut Vec<String>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut attributes = rustio_config::model::Settings::new();
    if info.auth {
        // targetcli: "if tpg.has_feature('auth'): tpg.set_attribute('authentication', 0)".
        attributes.insert("authentication".into(), ConfigValue::Int(0));
    }
    ops.push(Op::CreateTpg {
        tpg: tpg.clone(),
        attributes,
        parameters: Default::default(),
        auth: Chap::default(),
        nexus: None,
    });
    if info.nps && portal {
        let taken = live
            .target(&tpg.target.fabric, &tpg.target.wwn)
            .is_some_and(|t| {
                t.tpgs.iter().any(|g| {
                    g.portals
                        .iter()
                        .any(|p| p.ip_address == "[::0]" && p.port == 3260)
                })
            });
        if taken {
            notes.push(
                "Default portal not created: another TPG of this target listens on [::0]:3260."
                    .into(),
            );
        } else {
            ops.push(Op::CreatePortal {
                portal: PortalRef {
                    tpg: tpg.clone(),
                    ip: "[::0]".into(),
                    port: 3260,
                },
                iser: false,
                offload: false,
            });
            notes.push("Created default portal listening on all IPs ([::0]), port 3260.".into());
        }
    }
    if enable && !info.nexus {
        ops.push(Op::SetTpgEnable {
            tpg: tpg.clone(),
            enable: true,
        });
    }
    ops
}

fn common(name: &str, wwn: Option<String>) -> Common {
    Common {
        name: name.to_owned(),
        wwn,
        ..Common::default()
    }
}

fn check_name(name: &str) -> Result<()> {
    check_storage_object_name(name).map_err(|e| {
        Error::rule(
            "storage object names are 1-255 bytes without '/', whitespace, '.' or '..' (rtslib)",
            e,
        )
    })
}

fn dev_in_use(live: &SaveConfig, dev: &str) -> Option<String> {
    live.storage_objects
        .iter()
        .find(|s| s.dev() == Some(dev))
        .map(|s| s.path())
}

/// The on/off choices of `create backstore fileio`.
#[derive(Debug, Clone, Copy)]
struct FileioFlags {
    /// Buffered I/O with write cache (targetcli's default).
    write_back: bool,
    /// Create a new backing file sparse.
    sparse: bool,
    /// Asynchronous I/O.
    aio: bool,
}

fn create_backstore(ctx: &mut Ctx<'_>, kind: BackstoreKind) -> Result<()> {
    let live = ctx.lio.dump()?;
    match kind {
        BackstoreKind::Fileio {
            name,
            file,
            size,
            write_thru,
            no_sparse,
            aio,
            wwn,
        } => {
            let flags = FileioFlags {
                write_back: !write_thru,
                sparse: !no_sparse,
                aio,
            };
            create_fileio(ctx, &live, &name, &file, size.as_deref(), flags, wwn)
        }
        BackstoreKind::Block {
            name,
            dev,
            readonly,
            wwn,
        } => create_block(ctx, &live, &name, &dev, readonly, wwn),
        BackstoreKind::Ramdisk {
            name,
            size,
            nullio,
            wwn,
        } => create_ramdisk(ctx, &name, &size, nullio, wwn),
        BackstoreKind::Pscsi { name, dev } => create_pscsi(ctx, &name, dev),
        BackstoreKind::User {
            name,
            size,
            config,
            hw_max_sectors,
            control,
            wwn,
        } => {
            check_name(&name)?;
            let bytes = parse_size(&size)?;
            let so = StorageObject::User(UserObject {
                common: common(&name, wwn),
                config: Some(config),
                size: Some(bytes),
                hw_max_sectors,
                control,
                extra: Default::default(),
            });
            run_create_so(ctx, so)?;
            say!(
                ctx,
                "Created user-backed storage object {name} size {bytes}."
            );
            Ok(())
        }
    }
}

/// Refuses a backing file or device another storage object already uses.
fn refuse_shared_dev(live: &SaveConfig, dev: &str) -> Result<()> {
    match dev_in_use(live, dev) {
        Some(other) => Err(Error::rule(
            "two storage objects must not share a backing file or device",
            format!("{dev} is already used by {other}"),
        )),
        None => Ok(()),
    }
}

fn run_create_so(ctx: &mut Ctx<'_>, so: StorageObject) -> Result<usize> {
    run(ctx, vec![Op::CreateStorageObject(Box::new(so))])
}

fn create_fileio(
    ctx: &mut Ctx<'_>,
    live: &SaveConfig,
    name: &str,
    file: &Path,
    size: Option<&str>,
    flags: FileioFlags,
    wwn: Option<String>,
) -> Result<()> {
    check_name(name)?;
    let file = absolute(file)?;
    let dev = file.to_string_lossy().into_owned();
    refuse_shared_dev(live, &dev)?;
    let wanted = size.map(parse_size).transpose()?;
    let (size, created) = fileio_backing(ctx, &file, wanted, flags.sparse)?;
    let so = StorageObject::Fileio(FileioObject {
        common: common(name, wwn),
        dev,
        size,
        write_back: Some(flags.write_back),
        aio: flags.aio.then_some(true),
        extra: Default::default(),
    });
    if let Err(e) = run_create_so(ctx, so) {
        if created {
            let _ = fs::remove_file(&file);
        }
        return Err(e);
    }
    let shown = size
        .map(format_size)
        .unwrap_or_else(|| "block device".into());
    say!(ctx, "Created fileio {name} with size {shown}.");
    Ok(())
}

/// The size of a fileio backstore's file (`None` for a block device), creating or
/// extending the file like targetcli; `true` when the file was created here.
fn fileio_backing(
    ctx: &mut Ctx<'_>,
    file: &Path,
    wanted: Option<u64>,
    sparse: bool,
) -> Result<(Option<u64>, bool)> {
    let dev = file.display();
    match fs::metadata(file) {
        Ok(m) if m.file_type().is_block_device() => {
            if wanted.is_some() {
                say!(ctx, "Block device, size parameter ignored.");
            }
            Ok((None, false))
        }
        Ok(m) if m.is_file() => Ok((Some(existing_file_size(ctx, file, m.len(), wanted)?), false)),
        Ok(_) => Err(Error::rule(
            "a fileio backstore needs a regular file or a block device",
            format!("{dev} exists but is neither"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let s = wanted.ok_or_else(|| {
                Error::rule(
                    "creating the backing file of a fileio backstore needs a size",
                    format!("{dev} does not exist and no size was given"),
                )
            })?;
            if let Some(parent) = file.parent() {
                if !parent.is_dir() {
                    return Err(Error::rule(
                        "the directory of a fileio backing file must exist",
                        format!("{} does not exist", parent.display()),
                    ));
                }
            }
            create_backing_file(file, s, sparse)?;
            Ok((Some(s), true))
        }
        Err(source) => Err(Error::Io {
            op: "inspect",
            path: file.to_path_buf(),
            source,
        }),
    }
}

/// An existing file keeps its size; an empty one is extended to the size asked for.
fn existing_file_size(
    ctx: &mut Ctx<'_>,
    file: &Path,
    len: u64,
    wanted: Option<u64>,
) -> Result<u64> {
    let dev = file.display();
    if len != 0 {
        if wanted.is_some_and(|w| w != len) {
            say!(ctx, "{dev} exists, using its size ({len} bytes) instead.");
        }
        return Ok(len);
    }
    let s = wanted.ok_or_else(|| {
        Error::rule(
            "a fileio backstore needs a size when its file is empty",
            format!("{dev} is empty; give a size"),
        )
    })?;
    fs::OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|f| f.set_len(s))
        .map_err(|source| Error::Io {
            op: "extend",
            path: file.to_path_buf(),
            source,
        })?;
    Ok(s)
}

fn create_block(
    ctx: &mut Ctx<'_>,
    live: &SaveConfig,
    name: &str,
    dev: &Path,
    readonly: bool,
    wwn: Option<String>,
) -> Result<()> {
    check_name(name)?;
    let dev = absolute(dev)?.to_string_lossy().into_owned();
    refuse_shared_dev(live, &dev)?;
    let so = StorageObject::Block(BlockObject {
        common: common(name, wwn),
        dev: dev.clone(),
        readonly: Some(readonly),
        write_back: None,
        exclusive: None,
        extra: Default::default(),
    });
    run_create_so(ctx, so)?;
    say!(ctx, "Created block storage object {name} using {dev}.");
    Ok(())
}

fn create_ramdisk(
    ctx: &mut Ctx<'_>,
    name: &str,
    size: &str,
    nullio: bool,
    wwn: Option<String>,
) -> Result<()> {
    check_name(name)?;
    let bytes = parse_size(size)?;
    let so = StorageObject::Ramdisk(RamdiskObject {
        common: common(name, wwn),
        size: bytes,
        nullio: nullio.then_some(true),
        extra: Default::default(),
    });
    run_create_so(ctx, so)?;
    say!(
        ctx,
        "Created ramdisk {name} with size {}.",
        format_size(bytes)
    );
    Ok(())
}

fn create_pscsi(ctx: &mut Ctx<'_>, name: &str, dev: String) -> Result<()> {
    check_name(name)?;
    let dev = if dev.contains(':') && !dev.starts_with('/') {
        dev
    } else {
        absolute(Path::new(&dev))?.to_string_lossy().into_owned()
    };
    let so = StorageObject::Pscsi(PscsiObject {
        common: common(name, None),
        dev: dev.clone(),
        extra: Default::default(),
    });
    run_create_so(ctx, so)?;
    say!(ctx, "Created pscsi storage object {name} using {dev}.");
    Ok(())
}

fn create_backing_file(path: &Path, size: u64, sparse: bool) -> Result<()> {
    let io = |source| Error::Io {
        op: "create backing file",
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    let r = if sparse {
        f.set_len(size)
    } else {
        let what = format!(
            "allocating {}",
            path.file_name()
                .unwrap_or(path.as_os_str())
                .to_string_lossy()
        );
        let bar = Progress::bytes(size, &what);
        (|| {
            let chunk = vec![0u8; 1 << 20];
            let mut left = size;
            while left > 0 {
                let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
                f.write_all(&chunk[..n])?;
                left -= n as u64;
                bar.inc(n as u64);
            }
            f.sync_all()
        })()
    };
    if let Err(e) = r {
        let _ = fs::remove_file(path);
        return Err(io(e));
    }
    Ok(())
}

fn lowest_free(used: impl Iterator<Item = u64>, from: u64) -> u64 {
    let used: std::collections::BTreeSet<u64> = used.collect();
    let mut i = from;
    while used.contains(&i) {
        i += 1;
    }
    i
}

pub(crate) fn create(ctx: &mut Ctx<'_>, what: CreateWhat) -> Result<()> {
    match what {
        CreateWhat::Backstore { kind } => create_backstore(ctx, kind),
        CreateWhat::Target {
            wwn,
            fabric,
            no_tpg,
            no_portal,
        } => create_target(ctx, wwn, &fabric, !no_tpg, !no_portal),
        CreateWhat::Tpg {
            target,
            tag,
            no_portal,
            disabled,
        } => create_tpg(ctx, &target, tag, !no_portal, !disabled),
        CreateWhat::Lun {
            tpg,
            storage_object,
            lun,
            alias,
            no_mapped_luns,
        } => create_lun(ctx, &tpg, &storage_object, lun, alias, !no_mapped_luns),
        CreateWhat::Portal {
            tpg,
            ip,
            port,
            iser,
        } => create_portal(ctx, &tpg, ip, port, iser),
        CreateWhat::Acl {
            tpg,
            wwn,
            no_mapped_luns,
        } => create_acl(ctx, &tpg, &wwn, !no_mapped_luns),
        CreateWhat::MappedLun {
            acl,
            mapped_lun,
            tpg_lun,
            write_protect,
        } => create_mapped_lun(ctx, &acl, mapped_lun, &tpg_lun, write_protect),
        CreateWhat::AluaGroup {
            storage_object,
            name,
            id,
        } => create_alua_group(ctx, &storage_object, name, id),
    }
}

fn say_notes(ctx: &mut Ctx<'_>, notes: Vec<String>) -> Result<()> {
    for n in notes {
        say!(ctx, "{n}");
    }
    Ok(())
}

fn create_target(
    ctx: &mut Ctx<'_>,
    wwn: Option<String>,
    fabric: &str,
    with_tpg: bool,
    with_portal: bool,
) -> Result<()> {
    let info = managed_fabric(fabric)?;
    let wwn = match wwn {
        Some(w) => normalize_wwn(fabric, &w),
        None => generate_wwn(info)?,
    };
    let target = TargetRef {
        fabric: fabric.to_owned(),
        wwn: wwn.clone(),
    };
    let live = ctx.lio.dump()?;
    let mut ops = vec![Op::CreateTarget(target.clone())];
    let mut notes = Vec::new();
    if with_tpg {
        let tpg = TpgRef { target, tag: 1 };
        ops.extend(tpg_create_ops(
            &live,
            info,
            &tpg,
            with_portal,
            true,
            &mut notes,
        ));
    }
    run(ctx, ops)?;
    say!(ctx, "Created target {wwn}.");
    if with_tpg {
        say!(ctx, "Created TPG 1.");
    }
    say_notes(ctx, notes)
}

fn create_tpg(
    ctx: &mut Ctx<'_>,
    target: &str,
    tag: Option<u64>,
    with_portal: bool,
    enable: bool,
) -> Result<()> {
    let ObjectPath::Target(t) = parse_path(target)? else {
        return Err(wrong_kind(target, "a target (/<fabric>/<wwn>)"));
    };
    let info = managed_fabric(&t.fabric)?;
    let live = ctx.lio.dump()?;
    let existing = live
        .target(&t.fabric, &t.wwn)
        .ok_or_else(|| not_found("target", &t))?;
    let tag = tag.unwrap_or_else(|| lowest_free(existing.tpgs.iter().filter_map(|g| g.tag), 1));
    let tpg = TpgRef { target: t, tag };
    let mut notes = Vec::new();
    let ops = tpg_create_ops(&live, info, &tpg, with_portal, enable, &mut notes);
    run(ctx, ops)?;
    say!(ctx, "Created TPG {tag}.");
    say_notes(ctx, notes)
}

fn create_lun(
    ctx: &mut Ctx<'_>,
    tpg: &str,
    storage_object: &str,
    lun: Option<u64>,
    alias: Option<String>,
    map_into_acls: bool,
) -> Result<()> {
    let tref = tpg_of(tpg)?;
    let so = so_of(storage_object)?;
    let live = ctx.lio.dump()?;
    if live.storage_object(so.plugin.as_str(), &so.name).is_none() {
        return Err(not_found("storage object", &so));
    }
    let g = find_tpg(&live, &tref)?;
    if let Some(l) = g.luns.iter().find(|l| l.storage_object == so.to_string()) {
        return Err(Error::rule(
            "a TPG exports a storage object through one LUN only (targetcli)",
            format!("{so} is already LUN {} of {tref}", l.index),
        ));
    }
    let index = lun.unwrap_or_else(|| lowest_free(g.luns.iter().map(|l| l.index), 0));
    let lref = LunRef {
        tpg: tref.clone(),
        index,
    };
    let mut ops = vec![Op::CreateLun {
        lun: lref,
        so,
        alias,
        alua_group: None,
    }];
    let mut mapped = Vec::new();
    if map_into_acls {
        mapped = map_lun_into_acls(g, &tref, index, &mut ops);
    }
    run(ctx, ops)?;
    say!(ctx, "Created LUN {index}.");
    say_notes(ctx, mapped)
}

/// Maps a new TPG LUN into every ACL of the TPG (targetcli's auto-add), at the same
/// index or the ACL's lowest free one; returns what to tell the user.
fn map_lun_into_acls(
    g: &rustio_config::Tpg,
    tref: &TpgRef,
    index: u64,
    ops: &mut Vec<Op>,
) -> Vec<String> {
    let mut mapped = Vec::new();
    for acl in &g.node_acls {
        let used: Vec<u64> = acl.mapped_luns.iter().map(|m| m.index).collect();
        let m = if used.contains(&index) {
            lowest_free(used.into_iter(), 0)
        } else {
            index
        };
        ops.push(Op::CreateMappedLun {
            mlun: MappedLunRef {
                acl: AclRef {
                    tpg: tref.clone(),
                    node_wwn: acl.node_wwn.clone(),
                },
                index: m,
            },
            tpg_lun: index,
            write_protect: false,
            alias: None,
        });
        mapped.push(format!(
            "Created LUN {index}->{m} mapping in node ACL {}",
            acl.node_wwn
        ));
    }
    mapped
}

fn create_portal(ctx: &mut Ctx<'_>, tpg: &str, ip: String, port: u64, iser: bool) -> Result<()> {
    let tref = tpg_of(tpg)?;
    if !fabric_info(&tref.target.fabric).is_some_and(|i| i.nps) {
        return Err(Error::rule(
            "the fabric does not support this object",
            format!("fabric {} has no network portals", tref.target.fabric),
        ));
    }
    let ip = if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]")
    } else {
        ip
    };
    let portal = PortalRef {
        tpg: tref,
        ip,
        port,
    };
    run(
        ctx,
        vec![Op::CreatePortal {
            portal: portal.clone(),
            iser,
            offload: false,
        }],
    )?;
    say!(ctx, "Created network portal {}:{}.", portal.ip, portal.port);
    Ok(())
}

fn create_acl(ctx: &mut Ctx<'_>, tpg: &str, wwn: &str, map_luns: bool) -> Result<()> {
    let tref = tpg_of(tpg)?;
    let wwn = normalize_wwn(&tref.target.fabric, wwn);
    let live = ctx.lio.dump()?;
    let g = find_tpg(&live, &tref)?;
    let acl = AclRef {
        tpg: tref.clone(),
        node_wwn: wwn.clone(),
    };
    let mut ops = vec![Op::CreateAcl {
        acl: acl.clone(),
        attributes: Default::default(),
        auth: Chap::default(),
        tag: None,
    }];
    // targetcli maps every TPG LUN into a new ACL at its own index.
    let mapped = if map_luns { g.luns.as_slice() } else { &[] };
    for l in mapped {
        ops.push(Op::CreateMappedLun {
            mlun: MappedLunRef {
                acl: acl.clone(),
                index: l.index,
            },
            tpg_lun: l.index,
            write_protect: false,
            alias: None,
        });
    }
    let n = mapped.len();
    run(ctx, ops)?;
    say!(ctx, "Created Node ACL for {wwn}.");
    if n > 0 {
        say!(ctx, "Created {n} mapped LUN(s).");
    }
    Ok(())
}

fn create_mapped_lun(
    ctx: &mut Ctx<'_>,
    acl: &str,
    mapped_lun: u64,
    tpg_lun: &str,
    write_protect: bool,
) -> Result<()> {
    let ObjectPath::Acl(aref) = parse_path(acl)? else {
        return Err(wrong_kind(acl, "an ACL (.../tpg<N>/acls/<initiator>)"));
    };
    let tpg_lun = parse_lun_component(tpg_lun)
        .ok_or_else(|| Error::rule("TPG LUNs are written lun<N> or <N>", format!("{tpg_lun:?}")))?;
    let mlun = MappedLunRef {
        acl: aref,
        index: mapped_lun,
    };
    run(
        ctx,
        vec![Op::CreateMappedLun {
            mlun,
            tpg_lun,
            write_protect,
            alias: None,
        }],
    )?;
    say!(ctx, "Created mapped LUN {mapped_lun} -> lun{tpg_lun}.");
    Ok(())
}

fn create_alua_group(ctx: &mut Ctx<'_>, storage_object: &str, name: String, id: u64) -> Result<()> {
    let so = so_of(storage_object)?;
    let group = AluaTpg {
        name: name.clone(),
        tg_pt_gp_id: id,
        ..AluaTpg::default()
    };
    run(ctx, vec![Op::CreateAluaGroup { so, group }])?;
    say!(ctx, "Created ALUA group {name} (id {id}).");
    Ok(())
}

fn find_tpg<'a>(live: &'a SaveConfig, t: &TpgRef) -> Result<&'a rustio_config::Tpg> {
    live.target(&t.target.fabric, &t.target.wwn)
        .and_then(|x| x.tpgs.iter().find(|g| g.tag == Some(t.tag)))
        .ok_or_else(|| Error::NotFound {
            what: "TPG",
            name: t.to_string(),
        })
}

fn find_tpg_mut<'a>(cfg: &'a mut SaveConfig, t: &TpgRef) -> Option<&'a mut rustio_config::Tpg> {
    cfg.targets
        .iter_mut()
        .find(|x| x.fabric == t.target.fabric && x.wwn == t.target.wwn)?
        .tpgs
        .iter_mut()
        .find(|g| g.tag == Some(t.tag))
}

fn not_found(what: &'static str, name: &dyn std::fmt::Display) -> Error {
    Error::NotFound {
        what,
        name: name.to_string(),
    }
}

/// Removes a LUN and the mapped LUNs that point at it (rtslib `LUN.delete`).
fn remove_lun(g: &mut rustio_config::Tpg, index: u64) -> bool {
    let before = g.luns.len();
    g.luns.retain(|l| l.index != index);
    for a in &mut g.node_acls {
        a.mapped_luns.retain(|m| m.tpg_lun != index);
    }
    g.luns.len() != before
}

/// Removes the items `gone` matches from `v`; `NotFound` when there was none.
fn remove_matching<T>(
    v: &mut Vec<T>,
    gone: impl Fn(&T) -> bool,
    what: &'static str,
    name: &dyn std::fmt::Display,
) -> Result<()> {
    let before = v.len();
    v.retain(|x| !gone(x));
    if v.len() == before {
        Err(not_found(what, name))
    } else {
        Ok(())
    }
}

pub(crate) fn delete(ctx: &mut Ctx<'_>, args: &DeleteArgs) -> Result<()> {
    let path = parse_path(&args.path)?;
    let current = ctx.lio.dump()?;
    let mut desired = current.clone();
    remove_object(&mut desired, &path, args.force)?;
    let plan = diff(&current, &desired);
    let n = run_plan(ctx, &plan)?;
    say!(
        ctx,
        "Deleted {path} ({n} step{}).",
        if n == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Removes the object at `path` from `cfg`, with what hangs below it; the plan from
/// the old to the new configuration then deletes them in order.
fn remove_object(cfg: &mut SaveConfig, path: &ObjectPath, force: bool) -> Result<()> {
    match path {
        ObjectPath::StorageObject(so) => remove_storage_object(cfg, so, force),
        ObjectPath::AluaGroup(a) => remove_alua_group(cfg, a),
        ObjectPath::Target(t) => remove_matching(
            &mut cfg.targets,
            |x| x.fabric == t.fabric && x.wwn == t.wwn,
            "target",
            t,
        ),
        ObjectPath::Tpg(t) => {
            let target = cfg
                .targets
                .iter_mut()
                .find(|x| x.fabric == t.target.fabric && x.wwn == t.target.wwn)
                .ok_or_else(|| not_found("target", &t.target))?;
            remove_matching(&mut target.tpgs, |g| g.tag == Some(t.tag), "TPG", t)
        }
        ObjectPath::Lun(l) => {
            let g = find_tpg_mut(cfg, &l.tpg).ok_or_else(|| not_found("TPG", &l.tpg))?;
            if !remove_lun(g, l.index) {
                return Err(not_found("LUN", l));
            }
            Ok(())
        }
        ObjectPath::Portal(p) => {
            let g = find_tpg_mut(cfg, &p.tpg).ok_or_else(|| not_found("TPG", &p.tpg))?;
            let gone = |x: &rustio_config::Portal| x.ip_address == p.ip && x.port == p.port;
            remove_matching(&mut g.portals, gone, "portal", p)
        }
        ObjectPath::Acl(a) => {
            let g = find_tpg_mut(cfg, &a.tpg).ok_or_else(|| not_found("TPG", &a.tpg))?;
            let gone = |x: &rustio_config::NodeAcl| x.node_wwn == a.node_wwn;
            remove_matching(&mut g.node_acls, gone, "ACL", a)
        }
        ObjectPath::MappedLun(m) => {
            let g = find_tpg_mut(cfg, &m.acl.tpg).ok_or_else(|| not_found("TPG", &m.acl.tpg))?;
            let acl = g
                .node_acls
                .iter_mut()
                .find(|x| x.node_wwn == m.acl.node_wwn)
                .ok_or_else(|| not_found("ACL", &m.acl))?;
            remove_matching(&mut acl.mapped_luns, |x| x.index == m.index, "mapped LUN", m)
        }
        other => Err(Error::rule(
            "delete takes one object (backstore, target, TPG, LUN, portal, ACL, mapped LUN, ALUA group); \
             `rustio clear --confirm` deletes everything",
            format!("{other} is a group, not an object"),
        )),
    }
}

/// Removes a storage object; its LUNs (and their mapped LUNs) go with it only when
/// `force` is given (targetcli refuses otherwise).
fn remove_storage_object(cfg: &mut SaveConfig, so: &SoRef, force: bool) -> Result<()> {
    let spath = so.to_string();
    remove_matching(
        &mut cfg.storage_objects,
        |s| s.plugin() == so.plugin && s.name() == so.name,
        "storage object",
        so,
    )?;
    let mut users = Vec::new();
    for t in &mut cfg.targets {
        for g in &mut t.tpgs {
            let idx: Vec<u64> = g
                .luns
                .iter()
                .filter(|l| l.storage_object == spath)
                .map(|l| l.index)
                .collect();
            for i in idx {
                let tag = g.tag.unwrap_or(0);
                users.push(format!("/{}/{}/tpg{tag}/luns/lun{i}", t.fabric, t.wwn));
                remove_lun(g, i);
            }
        }
    }
    if !users.is_empty() && !force {
        return Err(Error::InUse {
            what: "storage object",
            name: spath,
            users: users.join(", "),
            hint: "delete those LUNs first, or use --force to delete them with it",
        });
    }
    Ok(())
}

fn remove_alua_group(cfg: &mut SaveConfig, a: &AluaRef) -> Result<()> {
    if a.name == "default_tg_pt_gp" {
        return Err(Error::rule(
            "default_tg_pt_gp belongs to the kernel and cannot be deleted",
            a.to_string(),
        ));
    }
    let so = cfg
        .storage_objects
        .iter_mut()
        .find(|s| s.plugin() == a.so.plugin && s.name() == a.so.name)
        .and_then(|s| s.common_mut())
        .ok_or_else(|| not_found("storage object", &a.so))?;
    remove_matching(&mut so.alua_tpgs, |g| g.name == a.name, "ALUA group", a)
}

fn auth_field(key: &str) -> Result<&'static str> {
    match key {
        "userid" | "chap_userid" => Ok("userid"),
        "password" | "chap_password" => Ok("password"),
        "mutual_userid" | "userid_mutual" | "chap_mutual_userid" => Ok("userid_mutual"),
        "mutual_password" | "password_mutual" | "chap_mutual_password" => Ok("password_mutual"),
        _ => Err(Error::rule(
            "auth settings are userid, password, mutual_userid, mutual_password (and enable on /iscsi)",
            format!("unknown auth setting {key:?}"),
        )),
    }
}

/// One step per `name=value` setting.
fn each_setting(
    settings: &[String],
    step: impl Fn(String, String) -> Result<Op>,
) -> Result<Vec<Op>> {
    key_values(settings)?
        .into_iter()
        .map(|(k, v)| step(k, v))
        .collect()
}

pub(crate) fn set(ctx: &mut Ctx<'_>, what: SetWhat) -> Result<()> {
    let (ops, shown) = match what {
        SetWhat::Attribute { path, settings } => (attribute_ops(&path, &settings)?, path),
        SetWhat::Parameter { path, settings } => {
            let tpg = tpg_of(&path)?;
            let ops = each_setting(&settings, |name, v| {
                Ok(Op::SetParameter {
                    tpg: tpg.clone(),
                    name,
                    value: ConfigValue::Str(v),
                })
            })?;
            (ops, path)
        }
        SetWhat::Auth { path, settings } => (auth_ops(&path, &settings)?, path),
        SetWhat::Enable { path, value } => {
            let tpg = tpg_of(&path)?;
            let enable = toggle(&value)?;
            (vec![Op::SetTpgEnable { tpg, enable }], path)
        }
        SetWhat::WriteProtect { path, value } => {
            let ObjectPath::MappedLun(mlun) = parse_path(&path)? else {
                return Err(wrong_kind(&path, "a mapped LUN"));
            };
            let on = toggle(&value)?;
            (vec![Op::SetWriteProtect { mlun, on }], path)
        }
        SetWhat::Iser { path, value } => {
            let ObjectPath::Portal(portal) = parse_path(&path)? else {
                return Err(wrong_kind(&path, "a portal"));
            };
            let on = toggle(&value)?;
            let flag = PortalFlag::Iser;
            (vec![Op::SetPortalFlag { portal, flag, on }], path)
        }
        SetWhat::Alua { path, settings } => (alua_ops(&path, &settings)?, path),
    };
    let lines: Vec<String> = ops.iter().map(ToString::to_string).collect();
    run(ctx, ops)?;
    for l in lines {
        say!(ctx, "{l}");
    }
    say!(ctx, "Updated {shown}.");
    Ok(())
}

fn attribute_ops(path: &str, settings: &[String]) -> Result<Vec<Op>> {
    let owner = match parse_path(path)? {
        ObjectPath::StorageObject(s) => AttrOwner::StorageObject(s),
        ObjectPath::Tpg(t) => AttrOwner::Tpg(t),
        ObjectPath::Acl(a) => AttrOwner::Acl(a),
        _ => return Err(wrong_kind(path, "a backstore, TPG or ACL")),
    };
    each_setting(settings, |name, v| {
        Ok(Op::SetAttribute {
            owner: owner.clone(),
            name,
            value: ConfigValue::from_configfs(&v),
        })
    })
}

/// CHAP settings; `enable=` turns discovery authentication enforcement on (after the
/// credentials are set) or off (before they are changed).
fn auth_ops(path: &str, settings: &[String]) -> Result<Vec<Op>> {
    let owner = match parse_path(path)? {
        ObjectPath::Tpg(t) => AuthOwner::Tpg(t),
        ObjectPath::Acl(a) => AuthOwner::Acl(a),
        ObjectPath::Fabric(f) if fabric_info(&f).is_some_and(|i| i.discovery_auth) => {
            AuthOwner::Discovery(f)
        }
        _ => return Err(wrong_kind(path, "a TPG, an ACL or /iscsi (discovery)")),
    };
    let mut ops = Vec::new();
    let mut enable = None;
    for (k, v) in key_values(settings)? {
        if k == "enable" {
            let AuthOwner::Discovery(_) = owner else {
                return Err(Error::rule(
                    "enable= applies to discovery authentication (/iscsi); TPG authentication is the attribute 'authentication'",
                    path.to_string(),
                ));
            };
            enable = Some(toggle(&v)?);
            continue;
        }
        ops.push(Op::SetAuth {
            owner: owner.clone(),
            field: auth_field(&k)?,
            value: (!v.is_empty() && v != "NULL").then_some(v),
        });
    }
    if let (Some(e), AuthOwner::Discovery(f)) = (enable, &owner) {
        let op = Op::SetDiscoveryEnforce {
            fabric: f.clone(),
            enable: e,
        };
        if e {
            ops.push(op);
        } else {
            ops.insert(0, op);
        }
    }
    Ok(ops)
}

fn alua_ops(path: &str, settings: &[String]) -> Result<Vec<Op>> {
    let ObjectPath::AluaGroup(group) = parse_path(path)? else {
        return Err(wrong_kind(path, "an ALUA group"));
    };
    each_setting(settings, |name, v| {
        let value = crate::read::alua_value(&name, &v).ok_or_else(|| {
            Error::rule(
                "ALUA settings are numbers (SPC-4 6.37)",
                format!("{name}={v}"),
            )
        })?;
        Ok(Op::SetAluaSetting {
            group: AluaRef {
                so: group.so.clone(),
                name: group.name.clone(),
            },
            name,
            value,
        })
    })
}

fn report_warnings(ctx: &mut Ctx<'_>, cfg: &SaveConfig) -> Result<()> {
    for w in validate(cfg).warnings() {
        writeln!(ctx.err, "{w}").map_err(out_err)?;
    }
    Ok(())
}

pub(crate) fn save(ctx: &mut Ctx<'_>, args: &SaveArgs) -> Result<()> {
    let cfg = ctx.lio.dump()?;
    let keep = if args.no_backup {
        None
    } else if args.backup || args.file == Path::new(DEFAULT_SAVE_FILE) {
        Some(args.max_backups)
    } else {
        None
    };
    let outcome = store::save(&args.file, &cfg, keep)?;
    if let Some(b) = outcome.backup {
        say!(ctx, "Previous configuration backed up to {}.", b.display());
    }
    say!(ctx, "Configuration saved to {}.", args.file.display());
    Ok(())
}

pub(crate) fn restore(ctx: &mut Ctx<'_>, args: &RestoreArgs) -> Result<()> {
    let cfg = store::load(&args.file)?;
    report_warnings(ctx, &cfg)?;
    let plan = ctx.lio.plan_restore(&cfg, args.clear_existing)?;
    if args.dry_run {
        write!(ctx.out, "{plan}").map_err(out_err)?;
        say!(ctx, "(dry run: nothing changed)");
        return Ok(());
    }
    let n = run_plan_shown(ctx, &plan, "restoring")?;
    say!(
        ctx,
        "Configuration restored from {} ({n} steps).",
        args.file.display()
    );
    Ok(())
}

pub(crate) fn clear(ctx: &mut Ctx<'_>, args: &ClearArgs) -> Result<()> {
    if !args.confirm {
        return Err(Error::rule(
            "clear deletes every backstore and target; pass --confirm (rtslib clear_existing(confirm=True))",
            "refusing to clear without --confirm",
        ));
    }
    let plan = ctx
        .lio
        .clear(&mut |i, op| tracing::debug!(step = i, "{op}"))?;
    say!(ctx, "All configuration cleared ({} steps).", plan.ops.len());
    Ok(())
}

pub(crate) fn apply(ctx: &mut Ctx<'_>, args: &ApplyArgs) -> Result<()> {
    let cfg = store::load(&args.file)?;
    report_warnings(ctx, &cfg)?;
    let plan = ctx.lio.plan_apply(&cfg)?;
    write!(ctx.out, "{plan}").map_err(out_err)?;
    if args.dry_run {
        say!(ctx, "(dry run: nothing changed)");
        return Ok(());
    }
    if plan.is_empty() {
        return Ok(());
    }
    let n = run_plan_shown(ctx, &plan, "applying")?;
    say!(ctx, "Applied {n} step{}.", if n == 1 { "" } else { "s" });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "iqn.2003-01.org.example:t";

    fn tpg_with_acls(acls: &str) -> rustio_config::Tpg {
        let cfg = SaveConfig::from_json(&format!(
            r#"{{"targets": [{{"fabric": "iscsi", "wwn": "{T}",
                 "tpgs": [{{"tag": 1, "node_acls": [{acls}]}}]}}]}}"#
        ))
        .expect("test config parses");
        cfg.targets[0].tpgs[0].clone()
    }

    #[test]
    fn remove_matching_says_what_was_not_found() {
        let mut v = vec![1, 2, 3];
        assert!(remove_matching(&mut v, |x| *x == 2, "LUN", &"lun2").is_ok());
        assert_eq!(v, [1, 3]);
        let e = remove_matching(&mut v, |x| *x == 9, "LUN", &"lun9");
        assert!(matches!(e, Err(Error::NotFound { what: "LUN", .. })));
        assert_eq!(v, [1, 3]);
    }

    #[test]
    fn each_setting_makes_one_step_per_pair_and_refuses_no_equals() {
        let tpg = TpgRef::new("iscsi", T, 1);
        let step = |name, v| {
            Ok(Op::SetParameter {
                tpg: tpg.clone(),
                name,
                value: ConfigValue::Str(v),
            })
        };
        let ops = each_setting(&["MaxRecvDataSegmentLength = 8192".into()], step);
        let ops = ops.expect("valid setting");
        assert_eq!(ops.len(), 1);
        assert!(
            matches!(&ops[0], Op::SetParameter { name, .. } if name == "MaxRecvDataSegmentLength")
        );
        assert!(each_setting(&["novalue".into()], step).is_err());
    }

    #[test]
    fn new_lun_maps_at_its_index_or_the_acls_lowest_free() {
        // targetcli: a new LUN is mapped into every ACL, at the same index when free.
        let g = tpg_with_acls(
            r#"{"node_wwn": "iqn.1993-08.org.debian:01:a", "mapped_luns": []},
               {"node_wwn": "iqn.1993-08.org.debian:01:b",
                "mapped_luns": [{"index": 0, "tpg_lun": 5}, {"index": 2, "tpg_lun": 6}]}"#,
        );
        let tref = TpgRef::new("iscsi", T, 1);
        let mut ops = Vec::new();
        let said = map_lun_into_acls(&g, &tref, 0, &mut ops);
        let got: Vec<(u64, u64)> = ops
            .iter()
            .filter_map(|op| match op {
                Op::CreateMappedLun { mlun, tpg_lun, .. } => Some((mlun.index, *tpg_lun)),
                _ => None,
            })
            .collect();
        assert_eq!(got, [(0, 0), (1, 0)]);
        assert_eq!(
            said[1],
            "Created LUN 0->1 mapping in node ACL iqn.1993-08.org.debian:01:b"
        );
    }

    #[test]
    fn a_backing_file_serves_one_storage_object() {
        let live = SaveConfig::from_json(
            r#"{"storage_objects": [{"plugin": "fileio", "name": "d", "dev": "/tmp/d.img",
                 "size": 4096}]}"#,
        )
        .expect("test config parses");
        assert!(refuse_shared_dev(&live, "/tmp/other.img").is_ok());
        let e = refuse_shared_dev(&live, "/tmp/d.img");
        assert!(matches!(e, Err(Error::Rule(_))));
    }
}
