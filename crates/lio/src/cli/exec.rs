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
    let plan = Plan { ops };
    let applied = ctx
        .lio
        .run_plan(&plan, &mut |i, op| tracing::debug!(step = i, "{op}"))?;
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
            check_name(&name)?;
            let file = absolute(&file)?;
            let dev = file.to_string_lossy().into_owned();
            if let Some(other) = dev_in_use(&live, &dev) {
                return Err(Error::rule(
                    "two storage objects must not share a backing file or device",
                    format!("{dev} is already used by {other}"),
                ));
            }
            let wanted = size.as_deref().map(parse_size).transpose()?;
            let mut created = false;
            let size = match fs::metadata(&file) {
                Ok(m) if m.file_type().is_block_device() => {
                    if wanted.is_some() {
                        say!(ctx, "Block device, size parameter ignored.");
                    }
                    None
                }
                Ok(m) if m.is_file() => {
                    if m.len() == 0 {
                        let s = wanted.ok_or_else(|| {
                            Error::rule(
                                "a fileio backstore needs a size when its file is empty",
                                format!("{dev} is empty; give a size"),
                            )
                        })?;
                        fs::OpenOptions::new()
                            .write(true)
                            .open(&file)
                            .and_then(|f| f.set_len(s))
                            .map_err(|source| Error::Io {
                                op: "extend",
                                path: file.clone(),
                                source,
                            })?;
                        Some(s)
                    } else {
                        if wanted.is_some_and(|w| w != m.len()) {
                            say!(
                                ctx,
                                "{dev} exists, using its size ({} bytes) instead.",
                                m.len()
                            );
                        }
                        Some(m.len())
                    }
                }
                Ok(_) => {
                    return Err(Error::rule(
                        "a fileio backstore needs a regular file or a block device",
                        format!("{dev} exists but is neither"),
                    ))
                }
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
                    create_backing_file(&file, s, !no_sparse)?;
                    created = true;
                    Some(s)
                }
                Err(source) => {
                    return Err(Error::Io {
                        op: "inspect",
                        path: file,
                        source,
                    })
                }
            };
            let so = StorageObject::Fileio(FileioObject {
                common: common(&name, wwn),
                dev: dev.clone(),
                size,
                write_back: Some(!write_thru),
                aio: aio.then_some(true),
                extra: Default::default(),
            });
            if let Err(e) = run(ctx, vec![Op::CreateStorageObject(Box::new(so))]) {
                if created {
                    let _ = fs::remove_file(&file);
                }
                return Err(e);
            }
            let shown = size
                .map(format_size)
                .unwrap_or_else(|| "block device".into());
            say!(ctx, "Created fileio {name} with size {shown}.");
        }
        BackstoreKind::Block {
            name,
            dev,
            readonly,
            wwn,
        } => {
            check_name(&name)?;
            let dev = absolute(&dev)?.to_string_lossy().into_owned();
            if let Some(other) = dev_in_use(&live, &dev) {
                return Err(Error::rule(
                    "two storage objects must not share a backing file or device",
                    format!("{dev} is already used by {other}"),
                ));
            }
            let so = StorageObject::Block(BlockObject {
                common: common(&name, wwn),
                dev: dev.clone(),
                readonly: Some(readonly),
                write_back: None,
                exclusive: None,
                extra: Default::default(),
            });
            run(ctx, vec![Op::CreateStorageObject(Box::new(so))])?;
            say!(ctx, "Created block storage object {name} using {dev}.");
        }
        BackstoreKind::Ramdisk {
            name,
            size,
            nullio,
            wwn,
        } => {
            check_name(&name)?;
            let bytes = parse_size(&size)?;
            let so = StorageObject::Ramdisk(RamdiskObject {
                common: common(&name, wwn),
                size: bytes,
                nullio: nullio.then_some(true),
                extra: Default::default(),
            });
            run(ctx, vec![Op::CreateStorageObject(Box::new(so))])?;
            say!(
                ctx,
                "Created ramdisk {name} with size {}.",
                format_size(bytes)
            );
        }
        BackstoreKind::Pscsi { name, dev } => {
            check_name(&name)?;
            let dev = if dev.contains(':') && !dev.starts_with('/') {
                dev
            } else {
                absolute(Path::new(&dev))?.to_string_lossy().into_owned()
            };
            let so = StorageObject::Pscsi(PscsiObject {
                common: common(&name, None),
                dev: dev.clone(),
                extra: Default::default(),
            });
            run(ctx, vec![Op::CreateStorageObject(Box::new(so))])?;
            say!(ctx, "Created pscsi storage object {name} using {dev}.");
        }
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
            run(ctx, vec![Op::CreateStorageObject(Box::new(so))])?;
            say!(
                ctx,
                "Created user-backed storage object {name} size {bytes}."
            );
        }
    }
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
        (|| {
            let chunk = vec![0u8; 1 << 20];
            let mut left = size;
            while left > 0 {
                let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
                f.write_all(&chunk[..n])?;
                left -= n as u64;
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
        } => {
            let info = managed_fabric(&fabric)?;
            let wwn = match wwn {
                Some(w) => normalize_wwn(&fabric, &w),
                None => generate_wwn(info)?,
            };
            let target = TargetRef {
                fabric: fabric.clone(),
                wwn: wwn.clone(),
            };
            let live = ctx.lio.dump()?;
            let mut ops = vec![Op::CreateTarget(target.clone())];
            let mut notes = Vec::new();
            if !no_tpg {
                ops.extend(tpg_create_ops(
                    &live,
                    info,
                    &TpgRef { target, tag: 1 },
                    !no_portal,
                    true,
                    &mut notes,
                ));
            }
            run(ctx, ops)?;
            say!(ctx, "Created target {wwn}.");
            if !no_tpg {
                say!(ctx, "Created TPG 1.");
            }
            for n in notes {
                say!(ctx, "{n}");
            }
            Ok(())
        }
        CreateWhat::Tpg {
            target,
            tag,
            no_portal,
            disabled,
        } => {
            let t = match parse_path(&target)? {
                ObjectPath::Target(t) => t,
                _ => return Err(wrong_kind(&target, "a target (/<fabric>/<wwn>)")),
            };
            let info = managed_fabric(&t.fabric)?;
            let live = ctx.lio.dump()?;
            let existing = live
                .target(&t.fabric, &t.wwn)
                .ok_or_else(|| Error::NotFound {
                    what: "target",
                    name: t.to_string(),
                })?;
            let tag =
                tag.unwrap_or_else(|| lowest_free(existing.tpgs.iter().filter_map(|g| g.tag), 1));
            let tpg = TpgRef { target: t, tag };
            let mut notes = Vec::new();
            let ops = tpg_create_ops(&live, info, &tpg, !no_portal, !disabled, &mut notes);
            run(ctx, ops)?;
            say!(ctx, "Created TPG {tag}.");
            for n in notes {
                say!(ctx, "{n}");
            }
            Ok(())
        }
        CreateWhat::Lun {
            tpg,
            storage_object,
            lun,
            alias,
            no_mapped_luns,
        } => {
            let tref = tpg_of(&tpg)?;
            let so = so_of(&storage_object)?;
            let live = ctx.lio.dump()?;
            if live.storage_object(so.plugin.as_str(), &so.name).is_none() {
                return Err(Error::NotFound {
                    what: "storage object",
                    name: so.to_string(),
                });
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
                lun: lref.clone(),
                so: so.clone(),
                alias,
                alua_group: None,
            }];
            let mut mapped = Vec::new();
            if !no_mapped_luns {
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
            }
            run(ctx, ops)?;
            say!(ctx, "Created LUN {index}.");
            for m in mapped {
                say!(ctx, "{m}");
            }
            Ok(())
        }
        CreateWhat::Portal {
            tpg,
            ip,
            port,
            iser,
        } => {
            let tref = tpg_of(&tpg)?;
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
        CreateWhat::Acl {
            tpg,
            wwn,
            no_mapped_luns,
        } => {
            let tref = tpg_of(&tpg)?;
            let wwn = normalize_wwn(&tref.target.fabric, &wwn);
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
            if !no_mapped_luns {
                for l in &g.luns {
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
            }
            let n = ops.len() - 1;
            run(ctx, ops)?;
            say!(ctx, "Created Node ACL for {wwn}.");
            if n > 0 {
                say!(ctx, "Created {n} mapped LUN(s).");
            }
            Ok(())
        }
        CreateWhat::MappedLun {
            acl,
            mapped_lun,
            tpg_lun,
            write_protect,
        } => {
            let aref = match parse_path(&acl)? {
                ObjectPath::Acl(a) => a,
                _ => return Err(wrong_kind(&acl, "an ACL (.../tpg<N>/acls/<initiator>)")),
            };
            let tpg_lun = parse_lun_component(&tpg_lun).ok_or_else(|| {
                Error::rule("TPG LUNs are written lun<N> or <N>", format!("{tpg_lun:?}"))
            })?;
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
        CreateWhat::AluaGroup {
            storage_object,
            name,
            id,
        } => {
            let so = so_of(&storage_object)?;
            let group = AluaTpg {
                name: name.clone(),
                tg_pt_gp_id: id,
                ..AluaTpg::default()
            };
            run(ctx, vec![Op::CreateAluaGroup { so, group }])?;
            say!(ctx, "Created ALUA group {name} (id {id}).");
            Ok(())
        }
    }
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

pub(crate) fn delete(ctx: &mut Ctx<'_>, args: &DeleteArgs) -> Result<()> {
    let path = parse_path(&args.path)?;
    let current = ctx.lio.dump()?;
    let mut desired = current.clone();
    match &path {
        ObjectPath::StorageObject(so) => {
            let spath = so.to_string();
            let before = desired.storage_objects.len();
            desired
                .storage_objects
                .retain(|s| !(s.plugin() == so.plugin && s.name() == so.name));
            if desired.storage_objects.len() == before {
                return Err(not_found("storage object", so));
            }
            let mut users = Vec::new();
            for t in &mut desired.targets {
                for g in &mut t.tpgs {
                    let idx: Vec<u64> = g.luns.iter().filter(|l| l.storage_object == spath).map(|l| l.index).collect();
                    for i in idx {
                        users.push(format!("/{}/{}/tpg{}/luns/lun{i}", t.fabric, t.wwn, g.tag.unwrap_or(0)));
                        remove_lun(g, i);
                    }
                }
            }
            if !users.is_empty() && !args.force {
                return Err(Error::InUse {
                    what: "storage object",
                    name: spath,
                    users: users.join(", "),
                    hint: "delete those LUNs first, or use --force to delete them with it",
                });
            }
        }
        ObjectPath::AluaGroup(a) => {
            if a.name == "default_tg_pt_gp" {
                return Err(Error::rule("default_tg_pt_gp belongs to the kernel and cannot be deleted", a.to_string()));
            }
            let so = desired
                .storage_objects
                .iter_mut()
                .find(|s| s.plugin() == a.so.plugin && s.name() == a.so.name)
                .and_then(|s| s.common_mut())
                .ok_or_else(|| not_found("storage object", &a.so))?;
            let before = so.alua_tpgs.len();
            so.alua_tpgs.retain(|g| g.name != a.name);
            if so.alua_tpgs.len() == before {
                return Err(not_found("ALUA group", a));
            }
        }
        ObjectPath::Target(t) => {
            let before = desired.targets.len();
            desired.targets.retain(|x| !(x.fabric == t.fabric && x.wwn == t.wwn));
            if desired.targets.len() == before {
                return Err(not_found("target", t));
            }
        }
        ObjectPath::Tpg(t) => {
            let target = desired
                .targets
                .iter_mut()
                .find(|x| x.fabric == t.target.fabric && x.wwn == t.target.wwn)
                .ok_or_else(|| not_found("target", &t.target))?;
            let before = target.tpgs.len();
            target.tpgs.retain(|g| g.tag != Some(t.tag));
            if target.tpgs.len() == before {
                return Err(not_found("TPG", t));
            }
        }
        ObjectPath::Lun(l) => {
            let g = find_tpg_mut(&mut desired, &l.tpg).ok_or_else(|| not_found("TPG", &l.tpg))?;
            if !remove_lun(g, l.index) {
                return Err(not_found("LUN", l));
            }
        }
        ObjectPath::Portal(p) => {
            let g = find_tpg_mut(&mut desired, &p.tpg).ok_or_else(|| not_found("TPG", &p.tpg))?;
            let before = g.portals.len();
            g.portals.retain(|x| !(x.ip_address == p.ip && x.port == p.port));
            if g.portals.len() == before {
                return Err(not_found("portal", p));
            }
        }
        ObjectPath::Acl(a) => {
            let g = find_tpg_mut(&mut desired, &a.tpg).ok_or_else(|| not_found("TPG", &a.tpg))?;
            let before = g.node_acls.len();
            g.node_acls.retain(|x| x.node_wwn != a.node_wwn);
            if g.node_acls.len() == before {
                return Err(not_found("ACL", a));
            }
        }
        ObjectPath::MappedLun(m) => {
            let g = find_tpg_mut(&mut desired, &m.acl.tpg).ok_or_else(|| not_found("TPG", &m.acl.tpg))?;
            let acl = g
                .node_acls
                .iter_mut()
                .find(|x| x.node_wwn == m.acl.node_wwn)
                .ok_or_else(|| not_found("ACL", &m.acl))?;
            let before = acl.mapped_luns.len();
            acl.mapped_luns.retain(|x| x.index != m.index);
            if acl.mapped_luns.len() == before {
                return Err(not_found("mapped LUN", m));
            }
        }
        other => {
            return Err(Error::rule(
                "delete takes one object (backstore, target, TPG, LUN, portal, ACL, mapped LUN, ALUA group); \
                 `rustio clear --confirm` deletes everything",
                format!("{other} is a group, not an object"),
            ))
        }
    }
    let plan = diff(&current, &desired);
    let n = ctx
        .lio
        .run_plan(&plan, &mut |i, op| tracing::debug!(step = i, "{op}"))?
        .steps;
    say!(
        ctx,
        "Deleted {path} ({n} step{}).",
        if n == 1 { "" } else { "s" }
    );
    Ok(())
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

pub(crate) fn set(ctx: &mut Ctx<'_>, what: SetWhat) -> Result<()> {
    let mut ops = Vec::new();
    let shown;
    match what {
        SetWhat::Attribute { path, settings } => {
            let owner = match parse_path(&path)? {
                ObjectPath::StorageObject(s) => AttrOwner::StorageObject(s),
                ObjectPath::Tpg(t) => AttrOwner::Tpg(t),
                ObjectPath::Acl(a) => AttrOwner::Acl(a),
                _ => return Err(wrong_kind(&path, "a backstore, TPG or ACL")),
            };
            for (k, v) in key_values(&settings)? {
                ops.push(Op::SetAttribute {
                    owner: owner.clone(),
                    name: k,
                    value: ConfigValue::from_configfs(&v),
                });
            }
            shown = path;
        }
        SetWhat::Parameter { path, settings } => {
            let tpg = tpg_of(&path)?;
            for (k, v) in key_values(&settings)? {
                ops.push(Op::SetParameter {
                    tpg: tpg.clone(),
                    name: k,
                    value: ConfigValue::Str(v),
                });
            }
            shown = path;
        }
        SetWhat::Auth { path, settings } => {
            let owner = match parse_path(&path)? {
                ObjectPath::Tpg(t) => AuthOwner::Tpg(t),
                ObjectPath::Acl(a) => AuthOwner::Acl(a),
                ObjectPath::Fabric(f) if fabric_info(&f).is_some_and(|i| i.discovery_auth) => {
                    AuthOwner::Discovery(f)
                }
                _ => return Err(wrong_kind(&path, "a TPG, an ACL or /iscsi (discovery)")),
            };
            let mut enable = None;
            for (k, v) in key_values(&settings)? {
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
            shown = path;
        }
        SetWhat::Enable { path, value } => {
            let tpg = tpg_of(&path)?;
            ops.push(Op::SetTpgEnable {
                tpg,
                enable: toggle(&value)?,
            });
            shown = path;
        }
        SetWhat::WriteProtect { path, value } => {
            let mlun = match parse_path(&path)? {
                ObjectPath::MappedLun(m) => m,
                _ => return Err(wrong_kind(&path, "a mapped LUN")),
            };
            ops.push(Op::SetWriteProtect {
                mlun,
                on: toggle(&value)?,
            });
            shown = path;
        }
        SetWhat::Iser { path, value } => {
            let portal = match parse_path(&path)? {
                ObjectPath::Portal(p) => p,
                _ => return Err(wrong_kind(&path, "a portal")),
            };
            ops.push(Op::SetPortalFlag {
                portal,
                flag: PortalFlag::Iser,
                on: toggle(&value)?,
            });
            shown = path;
        }
        SetWhat::Alua { path, settings } => {
            let group = match parse_path(&path)? {
                ObjectPath::AluaGroup(a) => a,
                _ => return Err(wrong_kind(&path, "an ALUA group")),
            };
            for (k, v) in key_values(&settings)? {
                let value = crate::read::alua_value(&k, &v).ok_or_else(|| {
                    Error::rule("ALUA settings are numbers (SPC-4 6.37)", format!("{k}={v}"))
                })?;
                ops.push(Op::SetAluaSetting {
                    group: AluaRef {
                        so: group.so.clone(),
                        name: group.name.clone(),
                    },
                    name: k,
                    value,
                });
            }
            shown = path;
        }
    }
    let lines: Vec<String> = ops.iter().map(ToString::to_string).collect();
    run(ctx, ops)?;
    for l in lines {
        say!(ctx, "{l}");
    }
    say!(ctx, "Updated {shown}.");
    Ok(())
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
    let n = ctx
        .lio
        .run_plan(&plan, &mut |i, op| tracing::debug!(step = i, "{op}"))?
        .steps;
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
    let n = ctx
        .lio
        .run_plan(&plan, &mut |i, op| tracing::debug!(step = i, "{op}"))?
        .steps;
    say!(ctx, "Applied {n} step{}.", if n == 1 { "" } else { "s" });
    Ok(())
}
