//! Typed AST of scst.conf (the sysfs-era format documented in scst.conf(5) and written
//! by scstadmin's `writeConfiguration`).
//!
//! Keywords are case-sensitive, as in scstadmin's hash lookups. Everything that is not a
//! keyword of its section is kept as an [`Attribute`]; which attribute names are valid is
//! decided by the conversion, which reports unknown ones instead of rejecting them.

use std::collections::HashMap;

use crate::error::{Error, ErrorKind, Pos};
use crate::syntax::{Block, Entry};
use crate::values::parse_ulong;

/// Highest LUN number SCST accepts (`SCST_MAX_LUN`, 14-bit flat addressing).
pub const SCST_MAX_LUN: u32 = (1 << 14) - 1;

/// A whole scst.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Global SCST attributes (`setup_id`, `threads`, ...).
    pub attributes: Vec<Attribute>,
    /// `HANDLER` sections.
    pub handlers: Vec<Handler>,
    /// `TARGET_DRIVER` sections.
    pub target_drivers: Vec<TargetDriver>,
    /// The `ALUA` section (global ALUA attributes), if present.
    pub alua: Option<Alua>,
    /// `DEVICE_GROUP` sections.
    pub device_groups: Vec<DeviceGroup>,
}

/// `name [value]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Value, if any.
    pub value: Option<String>,
    /// Position of the name.
    pub pos: Pos,
    /// Position of the value.
    pub value_pos: Option<Pos>,
}

impl Attribute {
    /// The value, or `""` when absent.
    pub fn value_str(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }

    /// `name value` as written (for reports).
    pub fn display(&self) -> String {
        match &self.value {
            Some(v) if v.is_empty() || v.contains(char::is_whitespace) => {
                format!("{} \"{v}\"", self.name)
            }
            Some(v) => format!("{} {v}", self.name),
            None => self.name.clone(),
        }
    }
}

/// `HANDLER <name> { ... }`: a device handler and its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// Handler name (`vdisk_fileio`, `dev_disk`, ...).
    pub name: String,
    /// Position of `HANDLER`.
    pub pos: Pos,
    /// Handler attributes.
    pub attributes: Vec<Attribute>,
    /// Devices.
    pub devices: Vec<Device>,
}

/// `DEVICE <name> { ... }` inside a `HANDLER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Device name (H:C:I:L for pass-through handlers).
    pub name: String,
    /// Position of `DEVICE`.
    pub pos: Pos,
    /// Device attributes (`filename`, `blocksize`, ...).
    pub attributes: Vec<Attribute>,
}

/// `TARGET_DRIVER <name> { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDriver {
    /// Driver name (`iscsi`, `qla2x00t`, `copy_manager`, ...).
    pub name: String,
    /// Position of `TARGET_DRIVER`.
    pub pos: Pos,
    /// Driver attributes.
    pub attributes: Vec<Attribute>,
    /// Targets.
    pub targets: Vec<Target>,
}

/// `TARGET <name> { ... }` inside a `TARGET_DRIVER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Target name (an IQN for iSCSI).
    pub name: String,
    /// Position of `TARGET`.
    pub pos: Pos,
    /// Position of a `HW_TARGET` marker, if present.
    pub hw_target: Option<Pos>,
    /// Target attributes.
    pub attributes: Vec<Attribute>,
    /// Default LUN set (target-oriented access control).
    pub luns: Vec<Lun>,
    /// Initiator groups (initiator-oriented access control).
    pub groups: Vec<Group>,
}

/// `LUN <number> <device> { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lun {
    /// LUN number (0..=16383).
    pub number: u32,
    /// Device name.
    pub device: String,
    /// Position of `LUN`.
    pub pos: Pos,
    /// LUN attributes (`read_only`).
    pub attributes: Vec<Attribute>,
}

/// `GROUP <name> { ... }` inside a `TARGET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Position of `GROUP`.
    pub pos: Pos,
    /// Group attributes.
    pub attributes: Vec<Attribute>,
    /// LUNs of the group.
    pub luns: Vec<Lun>,
    /// Initiator names or wildcard patterns.
    pub initiators: Vec<Initiator>,
}

/// `INITIATOR <name-or-pattern> { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiator {
    /// Name or pattern (`*`, `?`, `!` are wildcards, scst README).
    pub name: String,
    /// Position of `INITIATOR`.
    pub pos: Pos,
    /// Initiator attributes.
    pub attributes: Vec<Attribute>,
}

/// The global `ALUA { ... }` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alua {
    /// Position of `ALUA`.
    pub pos: Pos,
    /// Attributes.
    pub attributes: Vec<Attribute>,
}

/// `DEVICE_GROUP <name> { ... }`: devices sharing ALUA state (SPC-4 5.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGroup {
    /// Group name.
    pub name: String,
    /// Position of `DEVICE_GROUP`.
    pub pos: Pos,
    /// Attributes.
    pub attributes: Vec<Attribute>,
    /// Member devices.
    pub devices: Vec<DeviceRef>,
    /// Target port groups.
    pub target_groups: Vec<TargetGroup>,
}

/// `DEVICE <name>` inside a `DEVICE_GROUP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRef {
    /// Device name.
    pub name: String,
    /// Position of `DEVICE`.
    pub pos: Pos,
}

/// `TARGET_GROUP <name> { ... }`: an ALUA target port group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    /// Group name.
    pub name: String,
    /// Position of `TARGET_GROUP`.
    pub pos: Pos,
    /// Attributes (`group_id`, `state`, `preferred`).
    pub attributes: Vec<Attribute>,
    /// Member target ports.
    pub targets: Vec<TargetGroupMember>,
}

/// `TARGET <name> { rel_tgt_id N }` inside a `TARGET_GROUP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupMember {
    /// Target name (local or on another cluster node).
    pub name: String,
    /// Position of `TARGET`.
    pub pos: Pos,
    /// Attributes (`rel_tgt_id`).
    pub attributes: Vec<Attribute>,
}

const KEYWORDS: [&str; 11] = [
    "HANDLER",
    "DEVICE",
    "TARGET_DRIVER",
    "TARGET",
    "LUN",
    "GROUP",
    "INITIATOR",
    "DEVICE_GROUP",
    "TARGET_GROUP",
    "ALUA",
    "HW_TARGET",
];

fn keyword_of(entry: &Entry) -> Option<&'static str> {
    // Like scstadmin's hash lookups, a quoted keyword is still a keyword.
    let first = entry.words.first()?;
    KEYWORDS.iter().copied().find(|k| *k == first.text)
}

fn misplaced(entry: &Entry, context: &'static str) -> Error {
    Error::new(
        entry.pos(),
        ErrorKind::Misplaced {
            keyword: entry.words[0].text.clone(),
            context,
        },
    )
}

fn attribute(entry: Entry) -> Result<Attribute, Error> {
    let pos = entry.pos();
    let mut words = entry.words.into_iter();
    let name = words.next().map(|w| w.text).unwrap_or_default();
    if entry.block.is_some() {
        return Err(Error::new(pos, ErrorKind::AttributeWithBlock(name)));
    }
    let value = words.next();
    if let (Some(first), Some(second)) = (&value, words.next()) {
        // `IncomingUser joe secret`: never echo what is probably a CHAP secret.
        let secret = matches!(name.as_str(), "IncomingUser" | "OutgoingUser");
        return Err(Error::new(
            second.pos,
            ErrorKind::TwoValues {
                first: first.text.clone(),
                second: if secret {
                    "***".to_owned()
                } else {
                    second.text
                },
                name,
            },
        ));
    }
    Ok(Attribute {
        name,
        value_pos: value.as_ref().map(|w| w.pos),
        value: value.map(|w| w.text),
        pos,
    })
}

/// `KEYWORD name` (no third word) → (name, pos of keyword, block entries).
fn named(entry: Entry, keyword: &'static str) -> Result<(String, Pos, Option<Block>), Error> {
    let pos = entry.pos();
    let mut words = entry.words.into_iter().skip(1);
    let name = words
        .next()
        .ok_or_else(|| Error::new(pos, ErrorKind::MissingName(keyword)))?;
    if let Some(extra) = words.next() {
        return Err(Error::new(
            extra.pos,
            ErrorKind::ExtraWord {
                keyword,
                name: name.text,
                word: extra.text,
            },
        ));
    }
    Ok((name.text, pos, entry.block))
}

fn block_entries(block: Option<Block>) -> Vec<Entry> {
    block.map(|b| b.entries).unwrap_or_default()
}

/// Remembers first definitions to reject duplicates (scstadmin would merge or overwrite).
#[derive(Default)]
struct Seen(HashMap<String, Pos>);

impl Seen {
    fn check(&mut self, key: String, what: impl FnOnce() -> String, pos: Pos) -> Result<(), Error> {
        if let Some(first) = self.0.get(&key) {
            return Err(Error::new(
                pos,
                ErrorKind::Duplicate {
                    what: what(),
                    first: *first,
                },
            ));
        }
        self.0.insert(key, pos);
        Ok(())
    }
}

fn device_name(name: String, pos: Pos) -> Result<String, Error> {
    if name.contains('/') {
        return Err(Error::new(pos, ErrorKind::BadDeviceName(name)));
    }
    Ok(name)
}

fn lun(entry: Entry) -> Result<Lun, Error> {
    let pos = entry.pos();
    let mut words = entry.words.into_iter().skip(1);
    let number = words
        .next()
        .ok_or_else(|| Error::new(pos, ErrorKind::MissingName("LUN")))?;
    // scst_sysfs.c parses the LUN with kstrtoul(.., 0, ..): 0x hex and 0 octal too.
    let parsed = parse_ulong(&number.text)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= SCST_MAX_LUN);
    let Some(n) = parsed else {
        return Err(Error::new(number.pos, ErrorKind::BadLun(number.text)));
    };
    let device = words
        .next()
        .ok_or_else(|| Error::new(pos, ErrorKind::LunWithoutDevice(number.text.clone())))?;
    let device_pos = device.pos;
    let device = device_name(device.text, device_pos)?;
    let attributes = block_entries(entry.block)
        .into_iter()
        .map(|e| match keyword_of(&e) {
            Some(_) => Err(misplaced(&e, "inside LUN")),
            None => attribute(e),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Lun {
        number: n,
        device,
        pos,
        attributes,
    })
}

fn check_lun(seen: &mut Seen, l: &Lun) -> Result<(), Error> {
    seen.check(l.number.to_string(), || format!("LUN {}", l.number), l.pos)
}

fn attributes_only(entries: Vec<Entry>, context: &'static str) -> Result<Vec<Attribute>, Error> {
    entries
        .into_iter()
        .map(|e| match keyword_of(&e) {
            Some(_) => Err(misplaced(&e, context)),
            None => attribute(e),
        })
        .collect()
}

fn handler(entry: Entry, devices_seen: &mut Seen) -> Result<Handler, Error> {
    let (name, pos, block) = named(entry, "HANDLER")?;
    let mut h = Handler {
        name,
        pos,
        attributes: Vec::new(),
        devices: Vec::new(),
    };
    for e in block_entries(block) {
        match keyword_of(&e) {
            Some("DEVICE") => {
                let (dname, dpos, dblock) = named(e, "DEVICE")?;
                let dname = device_name(dname, dpos)?;
                devices_seen.check(dname.clone(), || format!("DEVICE {dname}"), dpos)?;
                let attributes = attributes_only(block_entries(dblock), "inside DEVICE")?;
                h.devices.push(Device {
                    name: dname,
                    pos: dpos,
                    attributes,
                });
            }
            Some(_) => return Err(misplaced(&e, "inside HANDLER")),
            None => h.attributes.push(attribute(e)?),
        }
    }
    Ok(h)
}

fn group(entry: Entry, initiators_seen: &mut Seen) -> Result<Group, Error> {
    let (name, pos, block) = named(entry, "GROUP")?;
    let mut g = Group {
        name,
        pos,
        attributes: Vec::new(),
        luns: Vec::new(),
        initiators: Vec::new(),
    };
    let mut luns_seen = Seen::default();
    for e in block_entries(block) {
        match keyword_of(&e) {
            Some("LUN") => {
                let l = lun(e)?;
                check_lun(&mut luns_seen, &l)?;
                g.luns.push(l);
            }
            Some("INITIATOR") => {
                let (iname, ipos, iblock) = named(e, "INITIATOR")?;
                // scstadmin: "Initiators can only belong to one group at a time".
                initiators_seen.check(
                    iname.clone(),
                    || format!("INITIATOR {iname} (an initiator belongs to one group of a target)"),
                    ipos,
                )?;
                let attributes = attributes_only(block_entries(iblock), "inside INITIATOR")?;
                g.initiators.push(Initiator {
                    name: iname,
                    pos: ipos,
                    attributes,
                });
            }
            Some(_) => return Err(misplaced(&e, "inside GROUP")),
            None => g.attributes.push(attribute(e)?),
        }
    }
    Ok(g)
}

fn target(entry: Entry) -> Result<Target, Error> {
    let (name, pos, block) = named(entry, "TARGET")?;
    let mut t = Target {
        name,
        pos,
        hw_target: None,
        attributes: Vec::new(),
        luns: Vec::new(),
        groups: Vec::new(),
    };
    let mut luns_seen = Seen::default();
    let mut groups_seen = Seen::default();
    let mut initiators_seen = Seen::default();
    for e in block_entries(block) {
        match keyword_of(&e) {
            Some("LUN") => {
                let l = lun(e)?;
                check_lun(&mut luns_seen, &l)?;
                t.luns.push(l);
            }
            Some("GROUP") => {
                let g = group(e, &mut initiators_seen)?;
                groups_seen.check(g.name.clone(), || format!("GROUP {}", g.name), g.pos)?;
                t.groups.push(g);
            }
            Some("HW_TARGET") => {
                if e.block.is_some() {
                    return Err(Error::new(e.pos(), ErrorKind::UnexpectedBlock("HW_TARGET")));
                }
                t.hw_target = Some(e.pos());
            }
            Some(_) => return Err(misplaced(&e, "inside TARGET")),
            None => t.attributes.push(attribute(e)?),
        }
    }
    Ok(t)
}

fn target_driver(entry: Entry) -> Result<TargetDriver, Error> {
    let (name, pos, block) = named(entry, "TARGET_DRIVER")?;
    let mut d = TargetDriver {
        name,
        pos,
        attributes: Vec::new(),
        targets: Vec::new(),
    };
    let mut seen = Seen::default();
    for e in block_entries(block) {
        match keyword_of(&e) {
            Some("TARGET") => {
                let t = target(e)?;
                seen.check(t.name.clone(), || format!("TARGET {}", t.name), t.pos)?;
                d.targets.push(t);
            }
            Some(_) => return Err(misplaced(&e, "inside TARGET_DRIVER")),
            None => d.attributes.push(attribute(e)?),
        }
    }
    Ok(d)
}

fn target_group(entry: Entry, seen: &mut Seen) -> Result<TargetGroup, Error> {
    let (name, pos, block) = named(entry, "TARGET_GROUP")?;
    let mut tg = TargetGroup {
        name,
        pos,
        attributes: Vec::new(),
        targets: Vec::new(),
    };
    for e in block_entries(block) {
        match keyword_of(&e) {
            Some("TARGET") => {
                let (tname, tpos, tblock) = named(e, "TARGET")?;
                // A target port belongs to one target group of a device group (scst_tg.c).
                seen.check(
                    tname.clone(),
                    || format!("TARGET {tname} (a target belongs to one TARGET_GROUP of a DEVICE_GROUP)"),
                    tpos,
                )?;
                let attributes =
                    attributes_only(block_entries(tblock), "inside TARGET_GROUP TARGET")?;
                tg.targets.push(TargetGroupMember {
                    name: tname,
                    pos: tpos,
                    attributes,
                });
            }
            Some(_) => return Err(misplaced(&e, "inside TARGET_GROUP")),
            None => tg.attributes.push(attribute(e)?),
        }
    }
    Ok(tg)
}

fn device_group(entry: Entry, dg_devices_seen: &mut Seen) -> Result<DeviceGroup, Error> {
    let (name, pos, block) = named(entry, "DEVICE_GROUP")?;
    let mut dg = DeviceGroup {
        name,
        pos,
        attributes: Vec::new(),
        devices: Vec::new(),
        target_groups: Vec::new(),
    };
    let mut tg_seen = Seen::default();
    let mut tgt_seen = Seen::default();
    for e in block_entries(block) {
        match keyword_of(&e) {
            Some("DEVICE") => {
                let (dname, dpos, dblock) = named(e, "DEVICE")?;
                if dblock.is_some() {
                    return Err(Error::new(
                        dpos,
                        ErrorKind::UnexpectedBlock("DEVICE in DEVICE_GROUP"),
                    ));
                }
                let dname = device_name(dname, dpos)?;
                // A device belongs to at most one device group (scst_tg.c).
                dg_devices_seen.check(
                    dname.clone(),
                    || format!("DEVICE_GROUP member {dname}"),
                    dpos,
                )?;
                dg.devices.push(DeviceRef {
                    name: dname,
                    pos: dpos,
                });
            }
            Some("TARGET_GROUP") => {
                let tg = target_group(e, &mut tgt_seen)?;
                tg_seen.check(
                    tg.name.clone(),
                    || format!("TARGET_GROUP {}", tg.name),
                    tg.pos,
                )?;
                dg.target_groups.push(tg);
            }
            Some(_) => return Err(misplaced(&e, "inside DEVICE_GROUP")),
            None => dg.attributes.push(attribute(e)?),
        }
    }
    Ok(dg)
}

/// Builds the typed AST from parsed entries.
pub fn build(entries: Vec<Entry>) -> Result<Config, Error> {
    let mut cfg = Config::default();
    let mut handlers_seen = Seen::default();
    let mut drivers_seen = Seen::default();
    let mut dgs_seen = Seen::default();
    let mut devices_seen = Seen::default();
    let mut dg_devices_seen = Seen::default();
    for e in entries {
        match keyword_of(&e) {
            Some("HANDLER") => {
                let h = handler(e, &mut devices_seen)?;
                handlers_seen.check(h.name.clone(), || format!("HANDLER {}", h.name), h.pos)?;
                cfg.handlers.push(h);
            }
            Some("TARGET_DRIVER") => {
                let d = target_driver(e)?;
                drivers_seen.check(
                    d.name.clone(),
                    || format!("TARGET_DRIVER {}", d.name),
                    d.pos,
                )?;
                cfg.target_drivers.push(d);
            }
            Some("DEVICE_GROUP") => {
                let dg = device_group(e, &mut dg_devices_seen)?;
                dgs_seen.check(
                    dg.name.clone(),
                    || format!("DEVICE_GROUP {}", dg.name),
                    dg.pos,
                )?;
                cfg.device_groups.push(dg);
            }
            Some("ALUA") => {
                let pos = e.pos();
                if let Some(extra) = e.words.get(1) {
                    return Err(Error::new(
                        extra.pos,
                        ErrorKind::ExtraWord {
                            keyword: "ALUA",
                            name: String::new(),
                            word: extra.text.clone(),
                        },
                    ));
                }
                if let Some(first) = &cfg.alua {
                    return Err(Error::new(
                        pos,
                        ErrorKind::Duplicate {
                            what: "ALUA".into(),
                            first: first.pos,
                        },
                    ));
                }
                let attributes = attributes_only(block_entries(e.block), "inside ALUA")?;
                cfg.alua = Some(Alua { pos, attributes });
            }
            Some(_) => return Err(misplaced(&e, "at the top level")),
            None => cfg.attributes.push(attribute(e)?),
        }
    }
    Ok(cfg)
}

/// Parses scst.conf text into the typed AST.
pub fn parse(input: &[u8]) -> Result<Config, Error> {
    build(crate::syntax::parse(input)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
# Automatically generated by SCST Configurator v3.8.0.

setup_id 0x1234

HANDLER vdisk_fileio {
\tDEVICE disk01 {
\t\tfilename /var/lib/disk01.img
\t\tnv_cache 1
\t}
}

TARGET_DRIVER iscsi {
\tenabled 1
\tIncomingUser \"joe 12charsecret\"

\tTARGET iqn.2006-10.net.vlnb:tgt {
\t\tHW_TARGET
\t\tenabled 1
\t\tLUN 0 disk01
\t\tLUN 1 disk01 {
\t\t\tread_only 1
\t\t}

\t\tGROUP ini {
\t\t\tLUN 0 disk01

\t\t\tINITIATOR iqn.1994-05.com.redhat:client*
\t\t}
\t}
}

DEVICE_GROUP dg {
\tDEVICE disk01
\tTARGET_GROUP tg {
\t\tgroup_id 1
\t\tstate active
\t\tTARGET iqn.2006-10.net.vlnb:tgt {
\t\t\trel_tgt_id 1
\t\t}
\t}
}
";

    #[test]
    fn builds_every_section() {
        let cfg = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(cfg.attributes.len(), 1);
        assert_eq!(cfg.attributes[0].name, "setup_id");
        assert_eq!(cfg.attributes[0].value.as_deref(), Some("0x1234"));
        assert_eq!(cfg.attributes[0].pos, Pos::new(3, 1));
        let h = &cfg.handlers[0];
        assert_eq!((h.name.as_str(), h.pos), ("vdisk_fileio", Pos::new(5, 1)));
        assert_eq!(h.devices[0].name, "disk01");
        assert_eq!(h.devices[0].attributes[1].display(), "nv_cache 1");
        let d = &cfg.target_drivers[0];
        assert_eq!(d.attributes[1].value.as_deref(), Some("joe 12charsecret"));
        assert_eq!(
            d.attributes[1].display(),
            "IncomingUser \"joe 12charsecret\""
        );
        let t = &d.targets[0];
        assert_eq!(t.hw_target, Some(Pos::new(17, 3)));
        assert_eq!(t.luns.len(), 2);
        assert_eq!(t.luns[1].number, 1);
        assert_eq!(t.luns[1].attributes[0].name, "read_only");
        let g = &t.groups[0];
        assert_eq!(g.initiators[0].name, "iqn.1994-05.com.redhat:client*");
        assert_eq!(g.initiators[0].pos, Pos::new(27, 4));
        let dg = &cfg.device_groups[0];
        assert_eq!(dg.devices[0].name, "disk01");
        let tg = &dg.target_groups[0];
        assert_eq!(tg.attributes.len(), 2);
        assert_eq!(tg.targets[0].attributes[0].value.as_deref(), Some("1"));
    }

    fn err(input: &str) -> Error {
        parse(input.as_bytes()).unwrap_err()
    }

    #[test]
    fn rejects_what_scstadmin_rejects_or_mangles() {
        let e = err("TARGET_DRIVER iscsi {\n\tIncomingUser joe secret\n}\n");
        assert_eq!(e.pos, Pos::new(2, 19));
        assert_eq!(
            e.kind,
            ErrorKind::TwoValues {
                name: "IncomingUser".into(),
                first: "joe".into(),
                second: "***".into()
            }
        );

        let e = err("HANDLER a {\n DEVICE d\n}\nHANDLER b {\n DEVICE d\n}\n");
        assert_eq!(e.pos, Pos::new(5, 2));
        assert_eq!(
            e.kind,
            ErrorKind::Duplicate {
                what: "DEVICE d".into(),
                first: Pos::new(2, 2)
            }
        );

        let e = err("TARGET_DRIVER iscsi {\n TARGET t {\n  LUN 16384 d\n }\n}\n");
        assert_eq!(
            (e.pos, e.kind),
            (Pos::new(3, 7), ErrorKind::BadLun("16384".into()))
        );

        let e = err("TARGET_DRIVER iscsi {\n TARGET t {\n  LUN 010 d\n  LUN 8 e\n }\n}\n");
        assert_eq!(e.pos, Pos::new(4, 3), "010 is octal 8 for kstrtoul");
        let e = err("TARGET_DRIVER iscsi {\n TARGET t {\n  LUN -1 d\n }\n}\n");
        assert_eq!(e.kind, ErrorKind::BadLun("-1".into()));

        let e = err("TARGET_DRIVER iscsi {\n TARGET t {\n  LUN 0\n }\n}\n");
        assert_eq!(e.pos, Pos::new(3, 3));

        let e = err("TARGET_DRIVER iscsi {\n TARGET t {\n  GROUP a {\n   INITIATOR x\n  }\n  GROUP b {\n   INITIATOR x\n  }\n }\n}\n");
        assert_eq!(e.pos, Pos::new(7, 4));

        let e = err("DEVICE d\n");
        assert_eq!(e.pos, Pos::new(1, 1));
        assert!(matches!(e.kind, ErrorKind::Misplaced { .. }));

        let e = err("HANDLER h {\n DEVICE\n}\n");
        assert_eq!(
            (e.pos, e.kind),
            (Pos::new(2, 2), ErrorKind::MissingName("DEVICE"))
        );

        let e = err("threads 4 {\n}\n");
        assert_eq!(e.kind, ErrorKind::AttributeWithBlock("threads".into()));

        let e = err("HANDLER h {\n DEVICE a/b\n}\n");
        assert_eq!(e.kind, ErrorKind::BadDeviceName("a/b".into()));

        let e = err("DEVICE_GROUP a {\n DEVICE d\n}\nDEVICE_GROUP b {\n DEVICE d\n}\n");
        assert_eq!(e.pos, Pos::new(5, 2));
    }

    #[test]
    fn keywords_are_case_sensitive_even_when_quoted() {
        let cfg = parse(b"handler x\n\"HANDLER\" y\n").unwrap();
        assert_eq!(cfg.attributes.len(), 1);
        assert_eq!(cfg.attributes[0].name, "handler");
        assert_eq!(cfg.handlers.len(), 1);
        assert_eq!(cfg.handlers[0].name, "y");
    }
}
