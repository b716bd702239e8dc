//! HANDLER / DEVICE → storage objects.

use rustio_config::model::Settings;
use rustio_config::validate::check_storage_object_name;
use rustio_config::wwn::validate_unit_serial;
use rustio_config::{
    BlockObject, Common, ConfigValue, FileioObject, Plugin, PscsiObject, RamdiskObject,
    StorageObject,
};

use super::rules::{Rule, Test};
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
    fn device_blocker(&self, kind: Kind, d: &ast::Device, v: &DevValues) -> Option<String> {
        if let Some((rounded, _)) = v.nullio_size {
            // rd_mcp counts pages in 32 bits (rd_page_count).
            if rounded / PAGE > u64::from(u32::MAX) {
                return Some(format!(
                    "LIO RAM disks hold at most 2^32 pages of 4096 bytes; {rounded} bytes do not fit"
                ));
            }
        }
        if kind == Kind::Passthrough && !is_hctl(&d.name) {
            return Some(format!(
                "pass-through device name {:?} is not an H:C:I:L address",
                d.name
            ));
        }
        if let Err(e) = check_storage_object_name(&d.name) {
            return Some(format!("LIO cannot use this name: {e}"));
        }
        if let Some(bs) = v.block_size {
            if !matches!(bs, 512 | 1024 | 2048 | 4096) {
                return Some(format!(
                    "LIO presents 512, 1024, 2048 or 4096-byte blocks only; exporting this \
                     {bs}-byte-block device with another block size would change its geometry"
                ));
            }
        }
        if let Some(p) = v.filename.as_deref() {
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
        let v = self.device_values(handler, kind, d, &attrs)?;
        if let Some(why) = self.device_blocker(kind, d, &v) {
            self.push(d.pos, Fidelity::Unsupported, construct, why.clone());
            let not = format!("DEVICE {} is not imported", d.name);
            self.not_imported_attrs(&d.attributes, &not);
            return Ok(DevState::NotImported(why));
        }

        // The storage object.
        let (common, serial_note) = common(kind, d, &attrs);
        let (so, detail) = storage_object(kind, d, &attrs, &v, common)?;
        let so_index = self.out.storage_objects.len();
        self.out.storage_objects.push(so);
        if let Some(p) = &v.filename {
            self.used_paths.insert(p.clone(), d.name.clone());
        }
        self.device_findings(kind, d, so_index, detail, serial_note.as_deref());

        // One finding per attribute.
        let mut attributes = Settings::new();
        if let Some(bs) = v.block_size {
            attributes.insert("block_size".into(), int(bs));
        }
        if kind == Kind::Fileio && v.nv_cache {
            // Buffered writes with the write cache reported off (see nv_cache_attr).
            attributes.insert("emulate_write_cache".into(), ConfigValue::Int(0));
        }
        let f = DevFlags {
            nv_cache: v.nv_cache,
            block_size: v.block_size.unwrap_or(512),
            opt_sectors: v.opt_sectors,
            nullio_size: v.nullio_size,
            in_dg: self
                .dg_of_device
                .get(d.name.as_str())
                .map(|dg| dg.name.clone()),
        };
        for a in attrs {
            self.device_attr(kind, handler, a, &mut attributes, &f)?;
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
            read_only: v.read_only,
            passthrough: kind == Kind::Passthrough,
            disk: kind != Kind::Passthrough || handler == "dev_disk",
            expl_alua: v.expl_alua,
        })
    }

    /// What SCST itself validates when it creates the device; its values are errors.
    fn device_values(
        &self,
        handler: &str,
        kind: Kind,
        d: &ast::Device,
        attrs: &[&Attribute],
    ) -> Result<DevValues, Error> {
        let filename = filename(handler, kind, d, attrs)?;
        let block_size = match find(attrs, "blocksize") {
            Some(a) if kind != Kind::Passthrough => {
                let v = ulong(a)?;
                if v < 512 || !v.is_power_of_two() {
                    return Err(bad_value(a, "SCST requires a power of two of at least 512"));
                }
                Some(v)
            }
            _ => None,
        };
        let nv_cache = flag(attrs, "nv_cache")?;
        let write_through = flag(attrs, "write_through")?;
        let o_direct = flag(attrs, "o_direct")?;
        let read_only = flag(attrs, "read_only")?;
        let expl_alua = flag(attrs, "expl_alua")?;
        let nullio_size = if kind == Kind::Nullio {
            Some(self.nullio_size(attrs)?)
        } else {
            None
        };
        let opt_sectors = match find(attrs, "opt_trans_len") {
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
        Ok(DevValues {
            filename,
            block_size,
            nv_cache,
            write_through,
            o_direct,
            read_only,
            expl_alua,
            nullio_size,
            opt_sectors,
        })
    }

    /// The findings of an imported device: what it became, and how initiators see it.
    fn device_findings(
        &mut self,
        kind: Kind,
        d: &ast::Device,
        so_index: usize,
        detail: String,
        serial_note: Option<&str>,
    ) {
        let construct = format!("DEVICE {}", d.name);
        let path = self.so_path(so_index);
        let mut detail = format!("{path}: {detail}");
        if let Some(usn) = serial_note {
            detail.push_str(&format!(
                "; unit serial {usn}, the usn SCST generates for this name (crc32c of the name, setup_id 0)"
            ));
        }
        self.push(d.pos, Fidelity::Exact, construct.clone(), detail);
        if let (Some(usn), Some((setup_id, _))) = (serial_note, self.setup_id) {
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
        if kind != Kind::Passthrough {
            self.push(
                d.pos,
                Fidelity::Note,
                construct,
                "initiators see LIO's device identification: INQUIRY vendor LIO-ORG and VPD page 0x83 \
                 designators built from the unit serial (NAA 6 with OUI 00:14:05, T10 vendor ID LIO-ORG); \
                 multipath WWIDs and /dev/disk/by-id names change, the unit serial (VPD page 0x80) does not",
            );
        }
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

    /// One attribute of an imported device.
    fn device_attr(
        &mut self,
        kind: Kind,
        handler: &str,
        a: &Attribute,
        attributes: &mut Settings,
        f: &DevFlags,
    ) -> Result<(), Error> {
        let vdisk = kind != Kind::Passthrough;
        let files = matches!(kind, Kind::Fileio | Kind::Blockio);
        match a.name.as_str() {
            "filename" if files => {
                self.attr(a, Fidelity::Exact, format!("dev {}", a.value_str()));
            }
            "blocksize" if vdisk => {
                let detail = format!("attribute block_size {}", f.block_size);
                self.attr(a, Fidelity::Exact, detail);
            }
            "nv_cache" if files => self.nv_cache_attr(kind, a)?,
            "write_through" if files => self.write_through_attr(kind, a, f.nv_cache)?,
            "o_direct" if kind == Kind::Fileio => self.o_direct_attr(a, f.nv_cache)?,
            "read_only" => self.read_only_attr(kind, a)?,
            "rotational" if vdisk => {
                let nonrot = i64::from(!boolean(a)?);
                attributes.insert("is_nonrot".into(), ConfigValue::Int(nonrot));
                self.attr(
                    a,
                    Fidelity::Exact,
                    format!("attribute is_nonrot {nonrot} (Block Device Characteristics VPD page, SBC-4 6.6.2)"),
                );
            }
            "thin_provisioned" if files => {
                let tp = i64::from(boolean(a)?);
                attributes.insert("emulate_tpu".into(), ConfigValue::Int(tp));
                attributes.insert("emulate_tpws".into(), ConfigValue::Int(tp));
                self.attr(
                    a,
                    Fidelity::Exact,
                    format!("attributes emulate_tpu {tp} and emulate_tpws {tp} (UNMAP and WRITE SAME with UNMAP, SBC-4 5.27, 5.50)"),
                );
            }
            "usn" if vdisk => self.usn_attr(a),
            "size" | "size_mb" if kind == Kind::Nullio => self.nullio_size_attr(a, f),
            "opt_trans_len" if vdisk => self.opt_trans_len_attr(kind, a, attributes, f),
            "bind_alua_state" if files => self.bind_alua_state_attr(a, f)?,
            "expl_alua" if vdisk => self.expl_alua_attr(a, f)?,
            _ => {
                let rules = DEVICE_RULES
                    .iter()
                    .filter(|(kinds, _)| kinds.covers(kind))
                    .map(|(_, rule)| rule);
                self.by_rules(a, rules, format!("unknown attribute of {handler} devices"))?;
            }
        }
        Ok(())
    }

    /// `nv_cache`: LIO has no mode that skips SYNCHRONIZE CACHE and FUA.
    fn nv_cache_attr(&mut self, kind: Kind, a: &Attribute) -> Result<(), Error> {
        if !boolean(a)? {
            self.attr(a, Fidelity::Exact, "no NV cache, the default");
            return Ok(());
        }
        let what = if kind == Kind::Fileio {
            "write_back=true with attribute emulate_write_cache 0 (buffered writes, write cache reported off)"
        } else {
            "LIO reports the block device's own write cache state"
        };
        self.attr(
            a,
            Fidelity::Approximate,
            format!(
                "{what}; unlike SCST's NV_CACHE mode LIO still executes SYNCHRONIZE CACHE and FUA \
                 writes (safer, slower when initiators send them)"
            ),
        );
        Ok(())
    }

    /// `write_through`: FILEIO write_back=false; BLOCK has no switch.
    fn write_through_attr(
        &mut self,
        kind: Kind,
        a: &Attribute,
        nv_cache: bool,
    ) -> Result<(), Error> {
        let wt = boolean(a)?;
        if wt && nv_cache {
            self.attr(
                a,
                Fidelity::Ignored,
                "nv_cache overrides write_through, in SCST as well",
            );
        } else if !wt {
            self.attr(a, Fidelity::Exact, "write-back caching, the default");
        } else if kind == Kind::Fileio {
            self.attr(
                a,
                Fidelity::Exact,
                "write_back=false (O_DSYNC writes, write cache reported off)",
            );
        } else {
            self.attr(
                a,
                Fidelity::Approximate,
                "LIO reports the block device's own write cache state (WCE bit) and cannot force it \
                 off; writes still reach the device and flushes are passed down",
            );
        }
        Ok(())
    }

    /// `o_direct` of vdisk_fileio.
    fn o_direct_attr(&mut self, a: &Attribute, nv_cache: bool) -> Result<(), Error> {
        if !boolean(a)? {
            self.attr(a, Fidelity::Exact, "buffered I/O, the default");
        } else if nv_cache {
            self.attr(
                a,
                Fidelity::Approximate,
                "LIO FILEIO has no O_DIRECT mode; with nv_cache the file is opened buffered",
            );
        } else {
            self.attr(
                a,
                Fidelity::Approximate,
                "LIO FILEIO has no O_DIRECT mode; imported as write_back=false (O_DSYNC writes, reads \
                 still go through the page cache)",
            );
        }
        Ok(())
    }

    /// `read_only`: every LUN of the device is write-protected.
    fn read_only_attr(&mut self, kind: Kind, a: &Attribute) -> Result<(), Error> {
        let detail = match (boolean(a)?, kind) {
            (false, _) => "writable, the default",
            (true, Kind::Blockio) => "readonly=true, and every LUN of this device is write-protected",
            (true, _) => {
                "every LUN of this device is write-protected (mapped LUN write_protect / demo_mode_write_protect)"
            }
        };
        self.attr(a, Fidelity::Exact, detail);
        Ok(())
    }

    /// `usn`: the unit serial number (VPD page 0x80, SPC-4 7.8.16).
    fn usn_attr(&mut self, a: &Attribute) {
        if validate_unit_serial(a.value_str()).is_ok() {
            self.attr(
                a,
                Fidelity::Exact,
                "wwn: the unit serial number (VPD page 0x80, SPC-4 7.8.16)",
            );
        } else {
            self.attr(
                a,
                Fidelity::Unsupported,
                "LIO unit serials are 1-253 printable ASCII characters without blanks; LIO generates one instead",
            );
        }
    }

    /// `size` / `size_mb` of vdisk_nullio: LIO RAM disks are whole pages.
    fn nullio_size_attr(&mut self, a: &Attribute, f: &DevFlags) {
        let (rounded, written) = f
            .nullio_size
            .unwrap_or((SCST_NULLIO_SIZE, SCST_NULLIO_SIZE));
        if rounded == written {
            self.attr(a, Fidelity::Exact, format!("size {rounded} bytes"));
        } else {
            self.attr(
                a,
                Fidelity::Approximate,
                format!("LIO RAM disks are whole 4096-byte pages: size {written} rounded up to {rounded} bytes"),
            );
        }
    }

    /// `opt_trans_len` → attribute `optimal_sectors` (OPTIMAL TRANSFER LENGTH, Block
    /// Limits VPD page, SBC-4 6.6.4).
    fn opt_trans_len_attr(
        &mut self,
        kind: Kind,
        a: &Attribute,
        attributes: &mut Settings,
        f: &DevFlags,
    ) {
        let (sectors, bytes) = f.opt_sectors.unwrap_or((0, 0));
        if kind == Kind::Fileio && bytes > FD_MAX_BYTES {
            self.attr(
                a,
                Fidelity::Unsupported,
                format!("LIO FILEIO transfers at most {FD_MAX_BYTES} bytes; the optimal length cannot exceed it"),
            );
        } else {
            attributes.insert("optimal_sectors".into(), int(sectors));
            self.attr(
                a,
                Fidelity::Exact,
                format!("attribute optimal_sectors {sectors} (OPTIMAL TRANSFER LENGTH, Block Limits VPD page, SBC-4 6.6.4)"),
            );
        }
    }

    /// `bind_alua_state`: SCST closes the backing store in some ALUA states; LIO never.
    fn bind_alua_state_attr(&mut self, a: &Attribute, f: &DevFlags) -> Result<(), Error> {
        if !boolean(a)? {
            self.attr(
                a,
                Fidelity::Exact,
                "ALUA state changes leave the backing store open, as in LIO",
            );
        } else if f.in_dg.is_none() {
            self.attr(
                a,
                Fidelity::Ignored,
                "no effect outside a DEVICE_GROUP, in SCST as well",
            );
        } else {
            self.attr(
                a,
                Fidelity::Unsupported,
                "LIO never opens or closes the backing store on ALUA state changes",
            );
        }
        Ok(())
    }

    /// `expl_alua`: the ALUA access type of the device's target port groups.
    fn expl_alua_attr(&mut self, a: &Attribute, f: &DevFlags) -> Result<(), Error> {
        let on = boolean(a)?;
        match (&f.in_dg, on) {
            (None, _) => self.attr(a, Fidelity::Ignored, "no effect outside a DEVICE_GROUP, in SCST as well"),
            (Some(dg), false) => self.attr(
                a,
                Fidelity::Exact,
                format!("implicit ALUA only: alua_access_type 1 on the groups of DEVICE_GROUP {dg}"),
            ),
            (Some(dg), true) => self.attr(
                a,
                Fidelity::Approximate,
                format!(
                    "alua_access_type 3 (implicit and explicit) on the groups of DEVICE_GROUP {dg}: LIO \
                     changes the state itself on SET TARGET PORT GROUPS, where SCST ran stpgd's script"
                ),
            ),
        }
        Ok(())
    }
}

/// The backing path of a FILEIO or BLOCK device; SCST refuses to create one without an
/// absolute path.
fn filename(
    handler: &str,
    kind: Kind,
    d: &ast::Device,
    attrs: &[&Attribute],
) -> Result<Option<String>, Error> {
    if !matches!(kind, Kind::Fileio | Kind::Blockio) {
        return Ok(None);
    }
    let a = find(attrs, "filename").ok_or_else(|| {
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
    Ok(Some(a.value_str().to_owned()))
}

/// The storage object's name and unit serial; for a vdisk without `usn`, the serial SCST
/// generates (returned as well, for the findings).
fn common(kind: Kind, d: &ast::Device, attrs: &[&Attribute]) -> (Common, Option<String>) {
    let mut common = Common {
        name: d.name.clone(),
        ..Common::default()
    };
    if kind == Kind::Passthrough {
        return (common, None);
    }
    match find(attrs, "usn") {
        Some(a) => {
            if validate_unit_serial(a.value_str()).is_ok() {
                common.wwn = Some(a.value_str().to_owned());
            }
            (common, None)
        }
        None => {
            let usn = scst_default_usn(&d.name, 0);
            common.wwn = Some(usn.clone());
            (common, Some(usn))
        }
    }
}

/// The storage object of an importable device, and what it is (for its finding).
fn storage_object(
    kind: Kind,
    d: &ast::Device,
    attrs: &[&Attribute],
    v: &DevValues,
    common: Common,
) -> Result<(StorageObject, String), Error> {
    let path = v.filename.clone().unwrap_or_default();
    Ok(match kind {
        Kind::Fileio => {
            let write_back = v.nv_cache || !(v.write_through || v.o_direct);
            let detail = format!(
                "fileio storage object on {path}, write_back={write_back}; its size is taken from the file, as SCST does"
            );
            let aio = if flag(attrs, "async")? {
                Some(true)
            } else {
                None
            };
            let so = FileioObject {
                common,
                dev: path,
                size: None,
                write_back: Some(write_back),
                aio,
                extra: Default::default(),
            };
            (StorageObject::Fileio(so), detail)
        }
        Kind::Blockio => {
            let detail = format!("block storage object on {path}");
            let so = BlockObject {
                common,
                dev: path,
                readonly: if v.read_only { Some(true) } else { None },
                write_back: None,
                exclusive: None,
                extra: Default::default(),
            };
            (StorageObject::Block(so), detail)
        }
        Kind::Nullio => {
            let (size, _) = v
                .nullio_size
                .unwrap_or((SCST_NULLIO_SIZE, SCST_NULLIO_SIZE));
            let detail = format!(
                "ramdisk storage object with nullio=true (no backing memory; reads return zeroes), size {size} bytes"
            );
            let so = RamdiskObject {
                common,
                size,
                nullio: Some(true),
                extra: Default::default(),
            };
            (StorageObject::Ramdisk(so), detail)
        }
        Kind::Passthrough => {
            let detail = format!(
                "pscsi storage object passing commands through to SCSI device {}",
                d.name
            );
            let so = PscsiObject {
                common,
                dev: d.name.clone(),
                extra: Default::default(),
            };
            (StorageObject::Pscsi(so), detail)
        }
    })
}

/// What SCST validates when it creates a device, read from its attributes.
#[derive(Debug, Clone, Default)]
struct DevValues {
    /// The backing path (FILEIO and BLOCK).
    filename: Option<String>,
    block_size: Option<u64>,
    nv_cache: bool,
    write_through: bool,
    o_direct: bool,
    read_only: bool,
    expl_alua: bool,
    /// `(size in bytes after rounding to pages, size as written)` of a NULLIO device.
    nullio_size: Option<(u64, u64)>,
    /// `opt_trans_len` as `(sectors, bytes)`.
    opt_sectors: Option<(u64, u64)>,
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

/// The handlers a device attribute rule applies to.
#[derive(Debug, Clone, Copy)]
enum Kinds {
    Any,
    /// Every handler but pass-through.
    Vdisk,
    /// vdisk_fileio and vdisk_blockio.
    Files,
    Only(Kind),
}

impl Kinds {
    fn covers(self, kind: Kind) -> bool {
        match self {
            Kinds::Any => true,
            Kinds::Vdisk => kind != Kind::Passthrough,
            Kinds::Files => matches!(kind, Kind::Fileio | Kind::Blockio),
            Kinds::Only(k) => k == kind,
        }
    }
}

/// Detail for T10 protection information settings (SBC-4 4.22).
const NO_DIF: &str = "T10 protection information settings are not imported";

/// Device attributes whose finding depends only on the handler and a simple test of the
/// value; `device_attr` handles the others.
const DEVICE_RULES: &[(Kinds, Rule)] = &[
    (
        Kinds::Only(Kind::Fileio),
        Rule::when(
            &["async"],
            Test::On,
            (Fidelity::Exact, "aio=true (asynchronous file I/O)"),
            (Fidelity::Exact, "synchronous file I/O, the default"),
        ),
    ),
    (
        Kinds::Vdisk,
        Rule::fixed(
            &["t10_dev_id"],
            Fidelity::Approximate,
            "LIO builds the T10 vendor ID designator of VPD page 0x83 from 'LIO-ORG' and the unit serial; \
             this identifier is not reproduced",
        ),
    ),
    (
        Kinds::Vdisk,
        Rule::when(
            &["removable"],
            Test::Off,
            (Fidelity::Exact, "non-removable, as LIO reports"),
            (
                Fidelity::Unsupported,
                "LIO always reports a non-removable medium (RMB=0)",
            ),
        ),
    ),
    (
        Kinds::Only(Kind::Fileio),
        Rule::fixed(
            &["size", "size_mb"],
            Fidelity::Ignored,
            "read-only for vdisk_fileio; SCST and LIO both use the file's size",
        ),
    ),
    (
        Kinds::Only(Kind::Blockio),
        Rule::fixed(
            &["size", "size_mb"],
            Fidelity::Unsupported,
            "LIO exports the whole block device; a smaller size is not reproduced",
        ),
    ),
    (
        Kinds::Only(Kind::Nullio),
        Rule::when(
            &["dummy"],
            Test::Off,
            (Fidelity::Exact, "a normal device, the default"),
            (
                Fidelity::Unsupported,
                "LIO has no placeholder LUN that reports 'no device' (peripheral qualifier 1); it is a \
                 normal empty-reading disk",
            ),
        ),
    ),
    (
        Kinds::Only(Kind::Nullio),
        Rule::when(
            &["read_zero"],
            Test::On,
            (Fidelity::Exact, "LIO's nullio RAM disk reads return zeroes"),
            (
                Fidelity::Approximate,
                "LIO's nullio RAM disk reads return zeroes instead of an uncleared buffer",
            ),
        ),
    ),
    (
        Kinds::Files,
        Rule::when(
            &["active"],
            Test::On,
            (
                Fidelity::Exact,
                "the backing store is opened at once, the default",
            ),
            (
                Fidelity::Unsupported,
                "LIO opens the backing store when the storage object is created; passive (active 0) \
                 devices do not exist",
            ),
        ),
    ),
    (
        Kinds::Vdisk,
        Rule::when(
            &["cluster_mode"],
            Test::Off,
            (Fidelity::Exact, "local reservations, the default"),
            (
                Fidelity::Unsupported,
                "LIO has no cluster-wide persistent reservations (SCST DLM mode)",
            ),
        ),
    ),
    (
        Kinds::Vdisk,
        Rule::when(
            &["dif_type"],
            Test::Zero,
            (Fidelity::Exact, "no protection information, the default"),
            (Fidelity::Unsupported, NO_DIF),
        ),
    ),
    (
        Kinds::Vdisk,
        Rule::fixed(
            &["dif_mode", "dif_static_app_tag", "dif_filename"],
            Fidelity::Unsupported,
            NO_DIF,
        ),
    ),
    (
        Kinds::Any,
        Rule::fixed(
            &["tst"],
            Fidelity::Unsupported,
            "LIO does not make the TST field of the Control mode page configurable",
        ),
    ),
    (
        Kinds::Any,
        Rule::fixed(
            &["lb_per_pb_exp"],
            Fidelity::Unsupported,
            "LIO does not make the LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT configurable",
        ),
    ),
    (
        Kinds::Any,
        Rule::fixed(
            &["pr_file_name", "pr_state"],
            Fidelity::Unsupported,
            "LIO keeps persistent reservations under its own dbroot; reservation state is not migrated",
        ),
    ),
    (
        Kinds::Any,
        Rule::fixed(
            &[
                "threads_num",
                "threads_pool_type",
                "numa_node_id",
                "max_tgt_dev_commands",
            ],
            Fidelity::Unsupported,
            "SCST performance tuning without an LIO counterpart",
        ),
    ),
    (
        Kinds::Any,
        Rule::fixed(
            &[
                "prod_id",
                "t10_vend_id",
                "vend_specific_id",
                "prod_rev_lvl",
                "inq_vend_specific",
                "scsi_device_name",
                "naa_id",
                "eui64_id",
            ],
            Fidelity::Unsupported,
            "INQUIRY / VPD identification setting; LIO reports its own (vendor LIO-ORG, designators from the unit serial)",
        ),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::rules::lookup;
    use crate::convert::rules::test_attr as attr;

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

    fn rule_for(kind: Kind, name: &str) -> Option<&'static Rule> {
        lookup(
            DEVICE_RULES
                .iter()
                .filter(|(kinds, _)| kinds.covers(kind))
                .map(|(_, r)| r),
            name,
        )
    }

    #[test]
    fn device_rules_apply_per_handler() {
        assert!(Kinds::Files.covers(Kind::Blockio) && !Kinds::Files.covers(Kind::Nullio));
        assert!(Kinds::Vdisk.covers(Kind::Nullio) && !Kinds::Vdisk.covers(Kind::Passthrough));
        assert!(Kinds::Only(Kind::Fileio).covers(Kind::Fileio));
        assert!(!Kinds::Only(Kind::Fileio).covers(Kind::Blockio));
        // size: the file's size for FILEIO, lost for BLOCK, a real setting for NULLIO
        // (device_attr's own arm), unknown for pass-through.
        let fileio = rule_for(Kind::Fileio, "size").unwrap();
        assert_eq!(fileio.pass.0, Fidelity::Ignored);
        let blockio = rule_for(Kind::Blockio, "size_mb").unwrap();
        assert_eq!(blockio.pass.0, Fidelity::Unsupported);
        assert!(rule_for(Kind::Nullio, "size").is_none());
        assert!(rule_for(Kind::Passthrough, "size").is_none());
        // RMB (SPC-4 6.6.2 standard INQUIRY data): LIO always reports 0.
        let removable = rule_for(Kind::Nullio, "removable").unwrap();
        assert_eq!(removable.test, Test::Off);
        assert_eq!(removable.fail.0, Fidelity::Unsupported);
        assert!(rule_for(Kind::Passthrough, "tst").is_some());
        assert!(rule_for(Kind::Blockio, "async").is_none());
        // Names device_attr handles itself are not in the table.
        for name in [
            "filename",
            "blocksize",
            "nv_cache",
            "read_only",
            "usn",
            "expl_alua",
        ] {
            assert!(rule_for(Kind::Fileio, name).is_none(), "{name}");
        }
    }

    #[test]
    fn filenames_and_serials() {
        let d = ast::Device {
            name: "disk1".into(),
            pos: crate::error::Pos::new(2, 1),
            attributes: Vec::new(),
        };
        let abs = attr("filename", "/dev/sdb");
        assert_eq!(
            filename("vdisk_blockio", Kind::Blockio, &d, &[&abs]).unwrap(),
            Some("/dev/sdb".into())
        );
        let rel = attr("filename", "disk.img");
        assert!(filename("vdisk_fileio", Kind::Fileio, &d, &[&rel]).is_err());
        assert!(filename("vdisk_fileio", Kind::Fileio, &d, &[]).is_err());
        assert_eq!(
            filename("vdisk_nullio", Kind::Nullio, &d, &[]).unwrap(),
            None
        );
        // Without usn a vdisk gets the serial SCST generates (VPD page 0x80).
        let (c, note) = common(Kind::Nullio, &d, &[]);
        assert_eq!(c.wwn, note);
        assert_eq!(note, Some(scst_default_usn("disk1", 0)));
        let usn = attr("usn", "abc123");
        let (c, note) = common(Kind::Fileio, &d, &[&usn]);
        assert_eq!((c.wwn.as_deref(), note), (Some("abc123"), None));
        let (c, note) = common(Kind::Passthrough, &d, &[]);
        assert_eq!((c.wwn, note), (None, None));
    }

    #[test]
    fn nullio_default_size_is_two_and_a_half_tib() {
        // VDISK_NULLIO_SIZE = 5 TiB / 2 (scst_vdisk.c), a whole number of 4 KiB pages.
        assert_eq!(SCST_NULLIO_SIZE, 2_748_779_069_440);
        assert_eq!(SCST_NULLIO_SIZE % PAGE, 0);
    }
}
