//! Helpers shared by the integration tests.

use std::collections::BTreeSet;

use rustio_scst::ast::{self, Attribute};
use rustio_scst::Pos;

/// Positions of every construct of the AST (keywords, names, attributes).
pub fn construct_positions(cfg: &ast::Config) -> BTreeSet<Pos> {
    fn attrs(out: &mut BTreeSet<Pos>, a: &[Attribute]) {
        out.extend(a.iter().map(|a| a.pos));
    }
    let mut out = BTreeSet::new();
    attrs(&mut out, &cfg.attributes);
    for h in &cfg.handlers {
        out.insert(h.pos);
        attrs(&mut out, &h.attributes);
        for d in &h.devices {
            out.insert(d.pos);
            attrs(&mut out, &d.attributes);
        }
    }
    for d in &cfg.target_drivers {
        out.insert(d.pos);
        attrs(&mut out, &d.attributes);
        for t in &d.targets {
            out.insert(t.pos);
            out.extend(t.hw_target);
            attrs(&mut out, &t.attributes);
            for l in &t.luns {
                out.insert(l.pos);
                attrs(&mut out, &l.attributes);
            }
            for g in &t.groups {
                out.insert(g.pos);
                attrs(&mut out, &g.attributes);
                for l in &g.luns {
                    out.insert(l.pos);
                    attrs(&mut out, &l.attributes);
                }
                for i in &g.initiators {
                    out.insert(i.pos);
                    attrs(&mut out, &i.attributes);
                }
            }
        }
    }
    if let Some(a) = &cfg.alua {
        out.insert(a.pos);
        attrs(&mut out, &a.attributes);
    }
    for dg in &cfg.device_groups {
        out.insert(dg.pos);
        attrs(&mut out, &dg.attributes);
        out.extend(dg.devices.iter().map(|d| d.pos));
        for tg in &dg.target_groups {
            out.insert(tg.pos);
            attrs(&mut out, &tg.attributes);
            for m in &tg.targets {
                out.insert(m.pos);
                attrs(&mut out, &m.attributes);
            }
        }
    }
    out
}
