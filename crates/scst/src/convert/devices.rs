//! HANDLER / DEVICE → storage objects.

use rustio_config::model::Settings;
use rustio_config::validate::check_storage_object_name;
use rustio_config::wwn::validate_unit_serial;
use rustio_config::{
    BlockObject, Common, ConfigValue, FileioObject, Plugin, PscsiObject, RamdiskObject,
    StorageObject,
};

use super::{bad_value, boolean, ulong, Converter, Dev, DevState};
use crate::ast::{self, Attribute};
use crate::error::{Error, ErrorKind};
use crate::report::Fidelity;
use crate::values::{scst_default_t10_dev_id, scst_default_usn};

/// Default size of a vdisk_nullio device (`VDISK_NULLIO_SIZE`, scst_vdisk.c): 2.5 TiB.
pub const SCST_NULLIO_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024 / 2;

/// LIO RAM disks are sized in pages (`rd_pages`).
const PAGE: u64 = 4096;

/// Largest transfer the FILEIO backstore accepts (`FD_MAX_BYTES`, target_core_file.h).
const FD_MAX_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fileio,
    Blockio,
    Nullio,
    Passthrough,
}

impl Kind {
    fn plugin(self) -> Plugin {
        match self {
            Kind::Fileio => Plugin::Fileio,
            Kind::Blockio => Plugin::Block,
            Kind::Nullio => Plugin::Ramdisk,
            Kind::Passthrough => Plugin::Pscsi,
        }
    }
}

fn handler_kind(name: &str) -> Result<Kind, &'static str> {
    match name {
        "vdisk_fileio" => Ok(Kind::Fileio),
        "vdisk_blockio" => Ok(Kind::Blockio),
        "vdisk_nullio" => Ok(Kind::Nullio),
        "dev_disk" | "dev_cdrom" | "dev_tape" | "dev_changer" | "dev_processor" | "dev_raid" | "dev_modisk" => {
            Ok(Kind::Passthrough)
        }
        "vcdrom" => Err("LIO has no virtual CD-ROM backstore"),
        n if n.ends_with("_perf") => Err("SCST performance-test handler that discards data; LIO has no counterpart"),
        _ => Err("unknown handler (an scst_user handler?); LIO's counterpart for userspace handlers is TCMU, which this importer does not map"),
    }
}

fn is_hctl(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn int(v: u64) -> ConfigValue {
    i64::try_from(v)
        .map(ConfigValue::Int)
        .unwrap_or(ConfigValue::UInt(v))
}

fn find<'b>(attrs: &[&'b Attribute], name: &str) -> Option<&'b Attribute> {
    attrs.iter().copied().find(|a| a.name == name)
}

fn flag(attrs: &[&Attribute], name: &str) -> Result<bool, Error> {
    find(attrs, name)
        .map(boolean)
        .transpose()
        .map(|v| v.unwrap_or(false))
}

impl<'a> Converter<'a> {
    pub(super) fn handlers(&mut self) -> Result<(), Error> {
        let ast = self.ast;
        for h in &ast.handlers {
            let kind = handler_kind(&h.name);
            let construct = format!("HANDLER {}", h.name);
            match kind {
                Ok(k) => self.push(
                    h.pos,
                    Fidelity::Exact,
                    construct,
                    format!("its devices become {} storage objects", k.plugin()),
                ),
                Err(why) => self.push(h.pos, Fidelity::Unsupported, construct, why),
            }
            let attrs = self.dedupe(&h.attributes, &[])?;
            for a in attrs {
                match a.name.as_str() {
                    "trace_level" => self.attr(
                        a,
                        Fidelity::Unsupported,
                        "SCST tracing setting; LIO logs through the kernel's dynamic debug",
                    ),
                    "type" | "mgmt" => self.attr(
                        a,
                        Fidelity::Ignored,
                        "read-only SCST attribute; SCST ignores it too",
                    ),
                    _ => self.attr(
                        a,
                        Fidelity::Unsupported,
                        "handler setting without an LIO counterpart",
                    ),
                }
            }
            for d in &h.devices {
                let state = match kind {
                    Ok(k) => self.device(&h.name, k, d)?,
                    Err(why) => {
                        let why = format!("HANDLER {} is not imported: {why}", h.name);
                        self.push(
                            d.pos,
                            Fidelity::Unsupported,
                            format!("DEVICE {}", d.name),
                            why.clone(),
                        );
                        self.not_imported_attrs(&d.attributes, &why);
                        DevState::NotImported(why)
                    }
                };
                self.dev_index.insert(d.name.as_str(), self.devs.len());
                self.devs.push(Dev { ast: d, state });
            }
        }
        Ok(())
    }

    /// Why a device cannot be imported, if it cannot.
    fn device_blocker(
        &self,
        kind: Kind,
        d: &ast::Device,
        block_size: Option<u64>,
        path: Option<&str>,
    ) -> Option<String> {
        if kind == Kind::Passthrough && !is_hctl(&d.name) {
            return Some(format!(
                "pass-through device name {:?} is not an H:C:I:L address",
                d.name
            ));
        }
        if let Err(e) = check_storage_object_name(&d.name) {
            return Some(format!("LIO cannot use this name: {e}"));
        }
        if let Some(bs) = block_size {
            if !matches!(bs, 512 | 1024 | 2048 | 4096) {
                return Some(format!(
                    "LIO presents 512, 1024, 2048 or 4096-byte blocks only; exporting this \
                     {bs}-byte-block device with another block size would change its geometry"
                ));
            }
        }
        if let Some(p) = path {
            if p.chars().any(char::is_control) {
                return Some(format!("the path {p:?} contains a control character"));
            }
            if let Some(other) = self.used_paths.get(p) {
                return Some(format!(
                    "{p} is already the backing store of DEVICE {other}; LIO (and rustio) refuse \
                     two storage objects on one backing path"
                ));
            }
        }
        None
    }

    fn device(&mut self, handler: &str, kind: Kind, d: &'a ast::Device) -> Result<DevState, Error> {
        let attrs = self.dedupe(&d.attributes, &[])?;
        let construct = format!("DEVICE {}", d.name);

        // What SCST itself validates when it creates the device.
        let filename = match kind {
            Kind::Fileio | Kind::Blockio => {
                let a = find(&attrs, "filename").ok_or_else(|| {
                    Error::new(
                        d.pos,
                        ErrorKind::MissingAttribute {
                            attribute: "filename",
                            reason: format!("SCST refuses to create {handler} devices without one"),
                        },
                    )
                })?;
                if !a.value_str().starts_with('/') {
                    return Err(bad_value(a, "the path must be absolute"));
                }
                Some(a.value_str().to_owned())
            }
            _ => None,
        };
        let block_size = match find(&attrs, "blocksize") {
            Some(a) if kind != Kind::Passthrough => {
                let v = ulong(a)?;
                if v < 512 || !v.is_power_of_two() {
                    return Err(bad_value(a, "SCST requires a power of two of at least 512"));
                }
                Some(v)
            }
            _ => None,
        };
        let nv_cache = flag(&attrs, "nv_cache")?;
        let write_through = flag(&attrs, "write_through")?;
        let o_direct = flag(&attrs, "o_direct")?;
        let read_only = flag(&attrs, "read_only")?;
        let expl_alua = flag(&attrs, "expl_alua")?;
        let nullio_size = if kind == Kind::Nullio {
            Some(self.nullio_size(&attrs)?)
        } else {
            None
        };
        let opt_sectors = match find(&attrs, "opt_trans_len") {
            Some(a) if matches!(kind, Kind::Fileio | Kind::Blockio | Kind::Nullio) => {
                let v = ulong(a)?;
                let bs = block_size.unwrap_or(512);
                if v == 0 || v % bs != 0 {
                    return Err(bad_value(
                        a,
                        format!("must be a positive multiple of the block size {bs}"),
                    ));
                }
                Some((v / bs, v))
            }
            _ => None,
        };

        let mut blocker = self.device_blocker(kind, d, block_size, filename.as_deref());
        if let Some((rounded, _)) = nullio_size {
            // rd_mcp counts pages in 32 bits (rd_page_count).
            if rounded / PAGE > u64::from(u32::MAX) {
                blocker = Some(format!(
                    "LIO RAM disks hold at most 2^32 pages of 4096 bytes; {rounded} bytes do not fit"
                ));
            }
        }
        if let Some(why) = blocker {
            self.push(d.pos, Fidelity::Unsupported, construct, why.clone());
            let not = format!("DEVICE {} is not imported", d.name);
            self.not_imported_attrs(&d.attributes, &not);
            return Ok(DevState::NotImported(why));
        }

        // The storage object.
        let mut common = Common {
            name: d.name.clone(),
            ..Common::default()
        };
        let mut attributes = Settings::new();
        if let Some(bs) = block_size {
            attributes.insert("block_size".into(), int(bs));
        }
        let vdisk = kind != Kind::Passthrough;
        let mut serial_note: Option<String> = None;
        if vdisk {
            match find(&attrs, "usn") {
                Some(a) => {
                    if validate_unit_serial(a.value_str()).is_ok() {
                        common.wwn = Some(a.value_str().to_owned());
                    }
                }
                None => {
                    let usn = scst_default_usn(&d.name, 0);
                    serial_note = Some(usn.clone());
                    common.wwn = Some(usn);
                }
            }
        }
        let mut detail;
        let so = match kind {
            Kind::Fileio => {
                let write_back = nv_cache || !(write_through || o_direct);
                if nv_cache {
                    attributes.insert("emulate_write_cache".into(), ConfigValue::Int(0));
                }
                let path = filename.clone().unwrap_or_default();
                detail = format!(
                    "fileio storage object on {path}, write_back={write_back}; its size is taken from the file, as SCST does"
                );
                StorageObject::Fileio(FileioObject {
                    common,
                    dev: path,
                    size: None,
                    write_back: Some(write_back),
                    aio: if flag(&attrs, "async")? {
                        Some(true)
                    } else {
                        None
                    },
                    extra: Default::default(),
                })
            }
            Kind::Blockio => {
                let path = filename.clone().unwrap_or_default();
                detail = format!("block storage object on {path}");
                StorageObject::Block(BlockObject {
                    common,
                    dev: path,
                    readonly: if read_only { Some(true) } else { None },
                    write_back: None,
                    exclusive: None,
                    extra: Default::default(),
                })
            }
            Kind::Nullio => {
                let (size, _) = nullio_size.unwrap_or((SCST_NULLIO_SIZE, SCST_NULLIO_SIZE));
                detail = format!(
                    "ramdisk storage object with nullio=true (no backing memory; reads return zeroes), size {size} bytes"
                );
                StorageObject::Ramdisk(RamdiskObject {
                    common,
                    size,
                    nullio: Some(true),
                    extra: Default::default(),
                })
            }
            Kind::Passthrough => {
                detail = format!(
                    "pscsi storage object passing commands through to SCSI device {}",
                    d.name
                );
                StorageObject::Pscsi(PscsiObject {
                    common,
                    dev: d.name.clone(),
                    extra: Default::default(),
                })
            }
        };
        let so_index = self.out.storage_objects.len();
        self.out.storage_objects.push(so);
        if let Some(p) = &filename {
            self.used_paths.insert(p.clone(), d.name.clone());
        }
        let path = self.so_path(so_index);
        detail = format!("{path}: {detail}");
        if let Some(usn) = &serial_note {
            detail.push_str(&format!(
                "; unit serial {usn}, the usn SCST generates for this name (crc32c of the name, setup_id 0)"
            ));
        }
        self.push(d.pos, Fidelity::Exact, construct.clone(), detail);
        if let (Some(usn), Some((setup_id, _))) = (&serial_note, self.setup_id) {
            self.push(
                d.pos,
                Fidelity::Approximate,
                construct.clone(),
                format!(
                    "unit serial {usn} assumes the device was created while setup_id was still 0, which is \
                     what happens when scstadmin -config applies this file at boot (it sets setup_id after \
                     creating devices); had it been created after setup_id {setup_id:#x} was set, SCST \
                     reported usn {} (t10_dev_id {}); compare with /sys/kernel/scst_tgt/devices/{}/usn",
                    scst_default_usn(&d.name, setup_id),
                    scst_default_t10_dev_id(&d.name, setup_id),
                    d.name
                ),
            );
        }
        if vdisk {
            self.push(
                d.pos,
                Fidelity::Note,
                construct,
                "initiators see LIO's device identification: INQUIRY vendor LIO-ORG and VPD page 0x83 \
                 designators built from the unit serial (NAA 6 with OUI 00:14:05, T10 vendor ID LIO-ORG); \
                 multipath WWIDs and /dev/disk/by-id names change, the unit serial (VPD page 0x80) does not",
            );
        }

        // One finding per attribute.
        let in_dg = self
            .dg_of_device
            .get(d.name.as_str())
            .map(|dg| dg.name.clone());
        for a in attrs {
            self.device_attr(
                kind,
                handler,
                a,
                &mut attributes,
                DevFlags {
                    nv_cache,
                    block_size: block_size.unwrap_or(512),
                    opt_sectors,
                    nullio_size,
                    in_dg: in_dg.clone(),
                },
            )?;
        }
        if let Some(c) = self
            .out
            .storage_objects
            .get_mut(so_index)
            .and_then(StorageObject::common_mut)
        {
            c.attributes = attributes;
        }
        Ok(DevState::Imported {
            so: so_index,
            read_only,
            passthrough: kind == Kind::Passthrough,
            disk: kind != Kind::Passthrough || handler == "dev_disk",
            expl_alua,
        })
    }

    /// `(size in bytes after rounding to pages, size as written)`.
    fn nullio_size(&self, attrs: &[&Attribute]) -> Result<(u64, u64), Error> {
        let size = find(attrs, "size");
        let size_mb = find(attrs, "size_mb");
        let bytes = match (size, size_mb) {
            (Some(a), Some(_)) => {
                return Err(Error::new(
                    a.pos,
                    ErrorKind::Conflict("give either size or size_mb, not both".into()),
                ))
            }
            (Some(a), None) => ulong(a)?,
            (None, Some(a)) => ulong(a)?
                .checked_mul(1024 * 1024)
                .ok_or_else(|| bad_value(a, "too large"))?,
            (None, None) => SCST_NULLIO_SIZE,
        };
        if bytes == 0 {
            let a = size.or(size_mb);
            return Err(a
                .map(|a| bad_value(a, "must be positive"))
                .unwrap_or_else(|| {
                    Error::new(
                        Default::default(),
                        ErrorKind::Conflict("size must be positive".into()),
                    )
                }));
        }
        match bytes.div_ceil(PAGE).checked_mul(PAGE) {
            Some(rounded) => Ok((rounded, bytes)),
            None => Err(match size.or(size_mb) {
                Some(a) => bad_value(a, "too large"),
                None => Error::new(
                    Default::default(),
                    ErrorKind::Conflict("size too large".into()),
                ),
            }),
        }
    }

    fn device_attr(
        &mut self,
        kind: Kind,
        handler: &str,
        a: &Attribute,
        attributes: &mut Settings,
        f: DevFlags,
    ) -> Result<(), Error> {
        use Fidelity::*;
        let vdisk = kind != Kind::Passthrough;
        let name = a.name.as_str();
        match name {
            "filename" if matches!(kind, Kind::Fileio | Kind::Blockio) => {
                self.attr(a, Exact, format!("dev {}", a.value_str()));
            }
            "blocksize" if vdisk => {
                self.attr(a, Exact, format!("attribute block_size {}", f.block_size));
            }
            "nv_cache" if matches!(kind, Kind::Fileio | Kind::Blockio) => {
                if boolean(a)? {
                    let what = if kind == Kind::Fileio {
                        "write_back=true with attribute emulate_write_cache 0 (buffered writes, write cache reported off)"
                    } else {
                        "LIO reports the block device's own write cache state"
                    };
                    self.attr(
                        a,
                        Approximate,
                        format!(
                            "{what}; unlike SCST's NV_CACHE mode LIO still executes SYNCHRONIZE CACHE and FUA \
                             writes (safer, slower when initiators send them)"
                        ),
                    );
                } else {
                    self.attr(a, Exact, "no NV cache, the default");
                }
            }
            "write_through" if matches!(kind, Kind::Fileio | Kind::Blockio) => {
                let wt = boolean(a)?;
                if wt && f.nv_cache {
                    self.attr(a, Ignored, "nv_cache overrides write_through, in SCST as well");
                } else if !wt {
                    self.attr(a, Exact, "write-back caching, the default");
                } else if kind == Kind::Fileio {
                    self.attr(a, Exact, "write_back=false (O_DSYNC writes, write cache reported off)");
                } else {
                    self.attr(
                        a,
                        Approximate,
                        "LIO reports the block device's own write cache state (WCE bit) and cannot force it \
                         off; writes still reach the device and flushes are passed down",
                    );
                }
            }
            "o_direct" if kind == Kind::Fileio => {
                if boolean(a)? {
                    let d = if f.nv_cache {
                        "LIO FILEIO has no O_DIRECT mode; with nv_cache the file is opened buffered"
                    } else {
                        "LIO FILEIO has no O_DIRECT mode; imported as write_back=false (O_DSYNC writes, reads \
                         still go through the page cache)"
                    };
                    self.attr(a, Approximate, d);
                } else {
                    self.attr(a, Exact, "buffered I/O, the default");
                }
            }
            "async" if kind == Kind::Fileio => {
                if boolean(a)? {
                    self.attr(a, Exact, "aio=true (asynchronous file I/O)");
                } else {
                    self.attr(a, Exact, "synchronous file I/O, the default");
                }
            }
            "read_only" => {
                if boolean(a)? {
                    let d = match kind {
                        Kind::Blockio => "readonly=true, and every LUN of this device is write-protected",
                        _ => "every LUN of this device is write-protected (mapped LUN write_protect / demo_mode_write_protect)",
                    };
                    self.attr(a, Exact, d);
                } else {
                    self.attr(a, Exact, "writable, the default");
                }
            }
            "rotational" if vdisk => {
                let rot = boolean(a)?;
                attributes.insert("is_nonrot".into(), ConfigValue::Int(i64::from(!rot)));
                self.attr(
                    a,
                    Exact,
                    format!("attribute is_nonrot {} (Block Device Characteristics VPD page, SBC-4 6.6.2)", i64::from(!rot)),
                );
            }
            "thin_provisioned" if matches!(kind, Kind::Fileio | Kind::Blockio) => {
                let tp = i64::from(boolean(a)?);
                attributes.insert("emulate_tpu".into(), ConfigValue::Int(tp));
                attributes.insert("emulate_tpws".into(), ConfigValue::Int(tp));
                self.attr(
                    a,
                    Exact,
                    format!("attributes emulate_tpu {tp} and emulate_tpws {tp} (UNMAP and WRITE SAME with UNMAP, SBC-4 5.27, 5.50)"),
                );
            }
            "usn" if vdisk => {
                if validate_unit_serial(a.value_str()).is_ok() {
                    self.attr(a, Exact, "wwn: the unit serial number (VPD page 0x80, SPC-4 7.8.16)");
                } else {
                    self.attr(
                        a,
                        Unsupported,
                        "LIO unit serials are 1-253 printable ASCII characters without blanks; LIO generates one instead",
                    );
                }
            }
            "t10_dev_id" if vdisk => {
                self.attr(
                    a,
                    Approximate,
                    "LIO builds the T10 vendor ID designator of VPD page 0x83 from 'LIO-ORG' and the unit serial; \
                     this identifier is not reproduced",
                );
            }
            "removable" if vdisk => {
                if boolean(a)? {
                    self.attr(a, Unsupported, "LIO always reports a non-removable medium (RMB=0)");
                } else {
                    self.attr(a, Exact, "non-removable, as LIO reports");
                }
            }
            "size" | "size_mb" if kind == Kind::Nullio => {
                let (rounded, written) = f.nullio_size.unwrap_or((SCST_NULLIO_SIZE, SCST_NULLIO_SIZE));
                if rounded == written {
                    self.attr(a, Exact, format!("size {rounded} bytes"));
                } else {
                    self.attr(
                        a,
                        Approximate,
                        format!("LIO RAM disks are whole 4096-byte pages: size {written} rounded up to {rounded} bytes"),
                    );
                }
            }
            "size" | "size_mb" if kind == Kind::Fileio => {
                self.attr(a, Ignored, "read-only for vdisk_fileio; SCST and LIO both use the file's size");
            }
            "size" | "size_mb" if kind == Kind::Blockio => {
                self.attr(a, Unsupported, "LIO exports the whole block device; a smaller size is not reproduced");
            }
            "dummy" if kind == Kind::Nullio => {
                if boolean(a)? {
                    self.attr(
                        a,
                        Unsupported,
                        "LIO has no placeholder LUN that reports 'no device' (peripheral qualifier 1); it is a \
                         normal empty-reading disk",
                    );
                } else {
                    self.attr(a, Exact, "a normal device, the default");
                }
            }
            "read_zero" if kind == Kind::Nullio => {
                if boolean(a)? {
                    self.attr(a, Exact, "LIO's nullio RAM disk reads return zeroes");
                } else {
                    self.attr(
                        a,
                        Approximate,
                        "LIO's nullio RAM disk reads return zeroes instead of an uncleared buffer",
                    );
                }
            }
            "opt_trans_len" if vdisk => {
                let (sectors, bytes) = f.opt_sectors.unwrap_or((0, 0));
                if kind == Kind::Fileio && bytes > FD_MAX_BYTES {
                    self.attr(
                        a,
                        Unsupported,
                        format!("LIO FILEIO transfers at most {FD_MAX_BYTES} bytes; the optimal length cannot exceed it"),
                    );
                } else {
                    attributes.insert("optimal_sectors".into(), int(sectors));
                    self.attr(
                        a,
                        Exact,
                        format!("attribute optimal_sectors {sectors} (OPTIMAL TRANSFER LENGTH, Block Limits VPD page, SBC-4 6.6.4)"),
                    );
                }
            }
            "active" if matches!(kind, Kind::Fileio | Kind::Blockio) => {
                if boolean(a)? {
                    self.attr(a, Exact, "the backing store is opened at once, the default");
                } else {
                    self.attr(
                        a,
                        Unsupported,
                        "LIO opens the backing store when the storage object is created; passive (active 0) \
                         devices do not exist",
                    );
                }
            }
            "bind_alua_state" if matches!(kind, Kind::Fileio | Kind::Blockio) => {
                if boolean(a)? && f.in_dg.is_none() {
                    self.attr(a, Ignored, "no effect outside a DEVICE_GROUP, in SCST as well");
                } else if boolean(a)? {
                    self.attr(
                        a,
                        Unsupported,
                        "LIO never opens or closes the backing store on ALUA state changes",
                    );
                } else {
                    self.attr(a, Exact, "ALUA state changes leave the backing store open, as in LIO");
                }
            }
            "expl_alua" if vdisk => {
                let on = boolean(a)?;
                match (&f.in_dg, on) {
                    (None, _) => self.attr(a, Ignored, "no effect outside a DEVICE_GROUP, in SCST as well"),
                    (Some(dg), false) => self.attr(
                        a,
                        Exact,
                        format!("implicit ALUA only: alua_access_type 1 on the groups of DEVICE_GROUP {dg}"),
                    ),
                    (Some(dg), true) => self.attr(
                        a,
                        Approximate,
                        format!(
                            "alua_access_type 3 (implicit and explicit) on the groups of DEVICE_GROUP {dg}: LIO \
                             changes the state itself on SET TARGET PORT GROUPS, where SCST ran stpgd's script"
                        ),
                    ),
                }
            }
            "cluster_mode" if vdisk => {
                if boolean(a)? {
                    self.attr(a, Unsupported, "LIO has no cluster-wide persistent reservations (SCST DLM mode)");
                } else {
                    self.attr(a, Exact, "local reservations, the default");
                }
            }
            "dif_type" if vdisk => {
                if ulong(a)? == 0 {
                    self.attr(a, Exact, "no protection information, the default");
                } else {
                    self.attr(a, Unsupported, "T10 protection information settings are not imported");
                }
            }
            "dif_mode" | "dif_static_app_tag" | "dif_filename" if vdisk => {
                self.attr(a, Unsupported, "T10 protection information settings are not imported");
            }
            "tst" => self.attr(a, Unsupported, "LIO does not make the TST field of the Control mode page configurable"),
            "lb_per_pb_exp" => self.attr(
                a,
                Unsupported,
                "LIO does not make the LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT configurable",
            ),
            "pr_file_name" | "pr_state" => self.attr(
                a,
                Unsupported,
                "LIO keeps persistent reservations under its own dbroot; reservation state is not migrated",
            ),
            "threads_num" | "threads_pool_type" | "numa_node_id" | "max_tgt_dev_commands" => {
                self.attr(a, Unsupported, "SCST performance tuning without an LIO counterpart")
            }
            "prod_id" | "t10_vend_id" | "vend_specific_id" | "prod_rev_lvl" | "inq_vend_specific" | "scsi_device_name"
            | "naa_id" | "eui64_id" => self.attr(
                a,
                Unsupported,
                "INQUIRY / VPD identification setting; LIO reports its own (vendor LIO-ORG, designators from the unit serial)",
            ),
            _ => self.attr(a, Unsupported, format!("unknown attribute of {handler} devices")),
        }
        Ok(())
    }
}

/// Device-wide facts an attribute finding depends on.
#[derive(Debug, Clone)]
struct DevFlags {
    nv_cache: bool,
    block_size: u64,
    opt_sectors: Option<(u64, u64)>,
    nullio_size: Option<(u64, u64)>,
    in_dg: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_kinds() {
        assert_eq!(handler_kind("vdisk_fileio"), Ok(Kind::Fileio));
        assert_eq!(handler_kind("vdisk_blockio"), Ok(Kind::Blockio));
        assert_eq!(handler_kind("vdisk_nullio"), Ok(Kind::Nullio));
        assert_eq!(handler_kind("dev_tape"), Ok(Kind::Passthrough));
        assert!(handler_kind("vcdrom").is_err());
        assert!(handler_kind("dev_disk_perf").is_err());
        assert!(handler_kind("my_handler").is_err());
        assert_eq!(Kind::Blockio.plugin(), Plugin::Block);
        assert_eq!(Kind::Nullio.plugin(), Plugin::Ramdisk);
    }

    #[test]
    fn hctl_names() {
        assert!(is_hctl("1:0:0:0"));
        assert!(is_hctl("10:2:33:4"));
        assert!(!is_hctl("1:0:0"));
        assert!(!is_hctl("1:0:0:x"));
        assert!(!is_hctl("1::0:0"));
    }

    #[test]
    fn nullio_default_size_is_two_and_a_half_tib() {
        // VDISK_NULLIO_SIZE = 5 TiB / 2 (scst_vdisk.c), a whole number of 4 KiB pages.
        assert_eq!(SCST_NULLIO_SIZE, 2_748_779_069_440);
        assert_eq!(SCST_NULLIO_SIZE % PAGE, 0);
    }
}
