//! `DEVICE_GROUP` / `TARGET_GROUP` → ALUA target port groups (SPC-4 5.16).
//!
//! SCST defines target port groups once per device group; LIO defines them per storage
//! object and puts each LUN (target port) into one group of its storage object. So every
//! member device gets a copy of every target group, and the LUNs that the member targets
//! export for those devices join it.

use std::collections::{HashMap, HashSet};

use rustio_config::validate::check_alias;
use rustio_config::{AluaTpg, StorageObject};

use super::iscsi::{parse_rel_tgt_id, rel_tgt_id_detail};
use super::{bad_value, boolean, ulong, Converter, DevState, TargetState};
use crate::ast::{self, Attribute};
use crate::error::{Error, ErrorKind, Pos};
use crate::report::Fidelity;

/// LIO's implicit group, which every LUN joins unless told otherwise; its id is 0.
const DEFAULT_GROUP: &str = "default_tg_pt_gp";

/// SCST state names (scst_tg.c) → SPC-4 asymmetric access states (6.37, Table 168).
fn alua_state(name: &str) -> Option<u64> {
    Some(match name {
        "active" => 0,
        "nonoptimized" => 1,
        "standby" => 2,
        "unavailable" => 3,
        "offline" => 14,
        "transitioning" => 15,
        _ => return None,
    })
}

fn find<'b>(attrs: &[&'b Attribute], name: &str) -> Option<&'b Attribute> {
    attrs.iter().copied().find(|a| a.name == name)
}

struct Member {
    so: usize,
    expl_alua: bool,
}

impl<'a> Converter<'a> {
    pub(super) fn device_groups(&mut self) -> Result<(), Error> {
        let ast = self.ast;
        for dg in &ast.device_groups {
            self.device_group(dg)?;
        }
        Ok(())
    }

    fn device_group(&mut self, dg: &'a ast::DeviceGroup) -> Result<(), Error> {
        self.push(
            dg.pos,
            Fidelity::Exact,
            format!("DEVICE_GROUP {}", dg.name),
            "devices sharing ALUA settings: each member storage object gets a copy of the target port groups",
        );
        let attrs = self.dedupe(&dg.attributes, &[])?;
        for a in attrs {
            self.attr(
                a,
                Fidelity::Unsupported,
                "device group setting without an LIO counterpart",
            );
        }
        let members = self.dg_members(dg);
        let member_paths: HashSet<String> = members.iter().map(|m| self.so_path(m.so)).collect();
        let mut ids: HashMap<u64, (String, Pos)> = HashMap::new();
        let mut group_zero: Option<(&'a ast::TargetGroup, u64, bool)> = None;
        for tg in &dg.target_groups {
            let attrs = self.dedupe(&tg.attributes, &[])?;
            let (id, state, preferred) = tg_values(&attrs)?;
            if let Some((other, _)) = ids.get(&id) {
                return Err(Error::new(
                    tg.pos,
                    ErrorKind::Conflict(format!(
                        "group_id {id} is also used by TARGET_GROUP {other} of DEVICE_GROUP {}",
                        dg.name
                    )),
                ));
            }
            ids.insert(id, (tg.name.clone(), tg.pos));
            let lio_name = lio_group_name(&tg.name, id);
            if let Err(e) = check_alias(&lio_name) {
                self.tg_not_imported(tg, &attrs, &lio_name, &e.to_string());
                continue;
            }
            if id == 0 {
                group_zero = Some((tg, state, preferred));
            }
            self.add_alua_tpgs(&members, &lio_name, (id, state, preferred));
            self.tg_findings(tg, &attrs, &lio_name, (id, state, preferred), members.len());
            for m in &tg.targets {
                self.target_group_member(dg, m, &lio_name, &member_paths)?;
            }
        }
        if let Some(zero) = group_zero {
            self.default_group_outside(zero, &member_paths);
        }
        Ok(())
    }

    /// Gives every member storage object a copy of the target port group.
    fn add_alua_tpgs(
        &mut self,
        members: &[Member],
        lio_name: &str,
        (id, state, preferred): (u64, u64, bool),
    ) {
        for m in members {
            let g = AluaTpg {
                name: lio_name.to_owned(),
                tg_pt_gp_id: id,
                alua_access_state: Some(state),
                alua_access_type: Some(if m.expl_alua { 3 } else { 1 }),
                preferred: Some(u64::from(preferred)),
                ..AluaTpg::default()
            };
            if let Some(c) = self
                .out
                .storage_objects
                .get_mut(m.so)
                .and_then(StorageObject::common_mut)
            {
                c.alua_tpgs.push(g);
            }
        }
    }

    /// The member DEVICEs of a group: those imported as storage objects LIO can give
    /// target port groups; reports each.
    fn dg_members(&mut self, dg: &'a ast::DeviceGroup) -> Vec<Member> {
        let mut members: Vec<Member> = Vec::new();
        for d in &dg.devices {
            let construct = format!("DEVICE {}", d.name);
            let state = self
                .dev_index
                .get(d.name.as_str())
                .map(|&i| self.devs[i].state.clone());
            match state {
                None => self.push(
                    d.pos,
                    Fidelity::Ignored,
                    construct,
                    "not defined in this file; scstadmin drops it from the group",
                ),
                Some(DevState::NotImported(why)) => {
                    self.push(d.pos, Fidelity::Unsupported, construct, format!("the device is not imported: {why}"))
                }
                Some(DevState::Imported { passthrough: true, .. }) => self.push(
                    d.pos,
                    Fidelity::Unsupported,
                    construct,
                    "LIO passes ALUA through to pass-through devices; it defines no target port groups for them",
                ),
                Some(DevState::Imported { so, expl_alua, .. }) => {
                    let path = self.so_path(so);
                    self.push(
                        d.pos,
                        Fidelity::Exact,
                        construct,
                        format!("{path} gets this group's target port groups"),
                    );
                    members.push(Member { so, expl_alua });
                }
            }
        }
        members
    }

    /// Reports a TARGET_GROUP whose name LIO cannot use, and everything in it.
    fn tg_not_imported(
        &mut self,
        tg: &ast::TargetGroup,
        attrs: &[&Attribute],
        lio_name: &str,
        e: &str,
    ) {
        let why = format!(
            "LIO cannot name an ALUA group {lio_name:?}: configfs directory names exclude '/', NUL, \
             '.' and '..' ({e})"
        );
        self.push(
            tg.pos,
            Fidelity::Unsupported,
            format!("TARGET_GROUP {}", tg.name),
            why.clone(),
        );
        for a in attrs {
            self.attr(a, Fidelity::Unsupported, why.clone());
        }
        for m in &tg.targets {
            self.push(
                m.pos,
                Fidelity::Unsupported,
                format!("TARGET {}", m.name),
                why.clone(),
            );
            self.not_imported_attrs(&m.attributes, &why);
        }
    }

    /// The findings of an imported TARGET_GROUP and of its attributes.
    fn tg_findings(
        &mut self,
        tg: &ast::TargetGroup,
        attrs: &[&Attribute],
        lio_name: &str,
        (id, state, preferred): (u64, u64, bool),
        members: usize,
    ) {
        let mut detail = format!(
            "ALUA target port group {lio_name} (tg_pt_gp_id {id}) on {members} storage object(s)"
        );
        if id == 0 {
            detail.push_str(
                "; LIO's implicit group default_tg_pt_gp has id 0, so this group becomes it",
            );
        } else if lio_name != tg.name {
            detail.push_str("; renamed because LIO reserves the name default_tg_pt_gp");
        }
        self.push(
            tg.pos,
            Fidelity::Exact,
            format!("TARGET_GROUP {}", tg.name),
            detail,
        );
        for a in attrs {
            match a.name.as_str() {
                "group_id" => self.attr(
                    a,
                    Fidelity::Exact,
                    format!("tg_pt_gp_id {id} (TARGET PORT GROUP, SPC-4 6.37)"),
                ),
                "state" => self.attr(a, Fidelity::Exact, format!("alua_access_state {state}")),
                "preferred" => self.attr(
                    a,
                    Fidelity::Exact,
                    format!("preferred {}", u64::from(preferred)),
                ),
                _ => self.attr(
                    a,
                    Fidelity::Unsupported,
                    "target group setting without an LIO counterpart",
                ),
            }
        }
    }

    /// LUNs of member devices on targets outside every group also sit in LIO's
    /// default group; SCST applied no ALUA state to them.
    fn default_group_outside(
        &mut self,
        (tg, state, preferred): (&'a ast::TargetGroup, u64, bool),
        member_paths: &HashSet<String>,
    ) {
        if state == 0 && !preferred {
            return;
        }
        let outside: Vec<String> = self
            .out
            .targets
            .iter()
            .flat_map(|t| {
                t.tpgs.iter().flat_map(move |g| {
                    g.luns
                        .iter()
                        .filter(|l| l.alua_tg_pt_gp_name.is_none())
                        .map(move |l| (t.wwn.clone(), l))
                })
            })
            .filter(|(_, l)| member_paths.contains(&l.storage_object))
            .map(|(w, l)| format!("LUN {} of {w}", l.index))
            .collect();
        if !outside.is_empty() {
            self.push(
                tg.pos,
                Fidelity::Approximate,
                format!("TARGET_GROUP {}", tg.name),
                format!(
                    "LIO's default_tg_pt_gp also holds {} and gives it this state, where SCST applied no \
                     ALUA state to ports outside the target groups",
                    outside.join(", ")
                ),
            );
        }
    }

    fn target_group_member(
        &mut self,
        dg: &ast::DeviceGroup,
        m: &'a ast::TargetGroupMember,
        lio_name: &str,
        member_paths: &HashSet<String>,
    ) -> Result<(), Error> {
        let construct = format!("TARGET {}", m.name);
        let attrs = self.dedupe(&m.attributes, &[])?;
        let state = self.targets.get(m.name.as_str()).cloned();
        match state {
            Some(TargetState::Iscsi { out, rel_tgt_id }) => {
                let count = self.join_group(dg, m, out, lio_name, member_paths)?;
                self.push(
                    m.pos,
                    Fidelity::Exact,
                    construct,
                    format!("{count} LUN(s) of this iSCSI target for the group's devices join {lio_name}"),
                );
                for a in attrs {
                    if a.name == "rel_tgt_id" {
                        self.member_rel_tgt_id(m, a, out, rel_tgt_id)?;
                    } else {
                        self.attr(a, Fidelity::Unsupported, NO_MEMBER_COUNTERPART);
                    }
                }
            }
            Some(TargetState::NotImported(why)) => {
                self.push(m.pos, Fidelity::Unsupported, construct, why.clone());
                for a in attrs {
                    self.attr(a, Fidelity::Unsupported, why.clone());
                }
            }
            None => {
                let why = "not a target of this file (a port on another cluster node?): LIO's REPORT TARGET PORT \
                           GROUPS lists only its own ports";
                self.push(m.pos, Fidelity::Approximate, construct, why);
                for a in attrs {
                    if a.name == "rel_tgt_id" {
                        self.attr(
                            a,
                            Fidelity::Approximate,
                            format!("{why}, so this identifier is not reported"),
                        );
                    } else {
                        self.attr(a, Fidelity::Unsupported, NO_MEMBER_COUNTERPART);
                    }
                }
            }
        }
        Ok(())
    }

    /// Puts the LUNs that target `out` exports for the group's devices into target port
    /// group `lio_name`; returns how many. A LUN is in one group only (SPC-4 5.16).
    fn join_group(
        &mut self,
        dg: &ast::DeviceGroup,
        m: &ast::TargetGroupMember,
        out: usize,
        lio_name: &str,
        member_paths: &HashSet<String>,
    ) -> Result<usize, Error> {
        let mut count = 0usize;
        let Some(tpg) = self
            .out
            .targets
            .get_mut(out)
            .and_then(|t| t.tpgs.first_mut())
        else {
            return Ok(count);
        };
        for lun in &mut tpg.luns {
            if !member_paths.contains(&lun.storage_object) {
                continue;
            }
            if let Some(prev) = &lun.alua_tg_pt_gp_name {
                return Err(Error::new(
                    m.pos,
                    ErrorKind::Conflict(format!(
                        "TARGET {} is already in target group {prev} of DEVICE_GROUP {}",
                        m.name, dg.name
                    )),
                ));
            }
            lun.alua_tg_pt_gp_name = Some(lio_name.to_owned());
            count += 1;
        }
        Ok(count)
    }

    /// A member's `rel_tgt_id`: the TPG tag, overriding the target's own setting.
    fn member_rel_tgt_id(
        &mut self,
        m: &'a ast::TargetGroupMember,
        a: &Attribute,
        out: usize,
        rel_tgt_id: Option<(u64, Pos)>,
    ) -> Result<(), Error> {
        let v = parse_rel_tgt_id(a)?;
        let mut detail = rel_tgt_id_detail(v);
        if let Some((w, p)) = rel_tgt_id {
            if w != v {
                detail = format!(
                    "overrides rel_tgt_id {w} of line {} (scstadmin applies DEVICE_GROUP settings last); {detail}",
                    p.line
                );
            }
        }
        self.attr(a, Fidelity::Approximate, detail);
        if let Some(tpg) = self
            .out
            .targets
            .get_mut(out)
            .and_then(|t| t.tpgs.first_mut())
        {
            tpg.tag = Some(v);
        }
        self.targets.insert(
            m.name.as_str(),
            TargetState::Iscsi {
                out,
                rel_tgt_id: Some((v, a.pos)),
            },
        );
        Ok(())
    }
}

/// Detail for target group member attributes other than `rel_tgt_id`.
const NO_MEMBER_COUNTERPART: &str = "target group member setting without an LIO counterpart";

/// A TARGET_GROUP's `group_id` (16 bits, SPC-4 6.37), `state` and `preferred`, with
/// SCST's defaults (0, active, 0).
fn tg_values(attrs: &[&Attribute]) -> Result<(u64, u64, bool), Error> {
    let id = match find(attrs, "group_id") {
        Some(a) => {
            let v = ulong(a)?;
            if v > 65535 {
                return Err(bad_value(
                    a,
                    "target port group identifiers are 16-bit (SPC-4 6.37)",
                ));
            }
            v
        }
        None => 0,
    };
    let state = match find(attrs, "state") {
        Some(a) => alua_state(a.value_str()).ok_or_else(|| {
            bad_value(
                a,
                "SCST knows active, nonoptimized, standby, unavailable, offline and transitioning",
            )
        })?,
        None => 0,
    };
    let preferred = find(attrs, "preferred")
        .map(boolean)
        .transpose()?
        .unwrap_or(false);
    Ok((id, state, preferred))
}

/// The LIO name of a target port group: id 0 is LIO's implicit group, and no other
/// group may take its name.
fn lio_group_name(name: &str, id: u64) -> String {
    if id == 0 {
        DEFAULT_GROUP.to_owned()
    } else if name == DEFAULT_GROUP {
        format!("scst_{DEFAULT_GROUP}")
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::rules::test_attr as attr;

    #[test]
    fn target_group_values() {
        // SCST's defaults: group_id 0, state active (SPC-4 6.37 Table 168: 0), not preferred.
        assert_eq!(tg_values(&[]).unwrap(), (0, 0, false));
        let (id, st, pref) = (
            attr("group_id", "0xffff"),
            attr("state", "offline"),
            attr("preferred", "1"),
        );
        assert_eq!(tg_values(&[&id, &st, &pref]).unwrap(), (65535, 14, true));
        let st = attr("state", "transitioning");
        assert_eq!(tg_values(&[&st]).unwrap().1, 15);
        // TARGET PORT GROUP is a 16-bit field.
        assert!(tg_values(&[&attr("group_id", "65536")]).is_err());
        assert!(tg_values(&[&attr("state", "Active")]).is_err());
    }

    #[test]
    fn lio_group_names() {
        assert_eq!(lio_group_name("tg1", 0), DEFAULT_GROUP);
        assert_eq!(lio_group_name(DEFAULT_GROUP, 5), "scst_default_tg_pt_gp");
        assert_eq!(lio_group_name("tg1", 5), "tg1");
    }
}
