use super::*;

fn sense6(page: u8, pc: u8) -> [u8; 6] {
    [0x1a, 0, (pc << 6) | page, 0, 255, 0]
}

/// Finds page `code` in MODE SENSE(6) data.
fn find_page(d: &[u8], code: u8) -> Option<Vec<u8>> {
    let mut pos = 4 + usize::from(d[3]);
    while pos + 2 <= d.len() {
        let len = 2 + usize::from(d[pos + 1]);
        if d[pos] & 0x3f == code {
            return Some(d[pos..pos + len].to_vec());
        }
        pos += len;
    }
    None
}

#[test]
fn mode_sense6_all_pages_layout() {
    let h = H::new();
    let d = h.good(&sense6(0x3f, 0), &[]);
    assert_eq!(usize::from(d[0]), d.len() - 1);
    assert_eq!(d[1], 0, "medium type");
    assert_eq!(d[2], 0x10, "DPOFUA, not write protected");
    assert_eq!(d[3], 8, "one short block descriptor");
    assert_eq!(&d[4..8], &(BLOCKS as u32).to_be_bytes());
    assert_eq!(&d[9..12], &[0, 2, 0]);
    let codes: Vec<u8> = {
        let mut v = Vec::new();
        let mut pos = 12;
        while pos < d.len() {
            v.push(d[pos]);
            pos += 2 + usize::from(d[pos + 1]);
        }
        v
    };
    assert_eq!(codes, [0x01, 0x08, 0x0a, 0x1c]);
    let caching = find_page(&d, 0x08).unwrap();
    assert_eq!(caching.len(), 20);
    assert_eq!(caching[2] & 0x04, 0x04, "WCE");
    let control = find_page(&d, 0x0a).unwrap();
    assert_eq!(
        control,
        [0x0a, 0x0a, 0x02, 0x10, 0, 0, 0, 0, 0xff, 0xff, 0, 0]
    );
}

#[test]
fn mode_sense_dbd_subpages_and_errors() {
    let h = H::new();
    let d = h.good(&[0x1a, 0x08, 0x0a, 0, 255, 0], &[]);
    assert_eq!(d[3], 0);
    assert_eq!(d.len(), 4 + 12);
    assert_eq!(d[4], 0x0a);
    // Subpage FFh of a page without subpages is the page itself.
    assert_eq!(h.good(&[0x1a, 0x08, 0x0a, 0xff, 255, 0], &[]), d);
    assert_invalid_cdb(h.check(&[0x1a, 0x08, 0x0a, 0x01, 255, 0], &[]), 3, None);
    assert_invalid_cdb(h.check(&[0x1a, 0x08, 0x19, 0, 255, 0], &[]), 2, Some(5));
    // Saved values are not implemented.
    assert_sense(
        h.check(&sense6(0x3f, 3), &[]),
        SenseKey::IllegalRequest,
        0x39,
        0x00,
    );
    // Allocation length truncates and is not an error.
    assert_eq!(h.good(&[0x1a, 0, 0x3f, 0, 4, 0], &[]).len(), 4);
}

#[test]
fn mode_sense_changeable_and_default() {
    let h = H::with(LuConfig::new("t", "s").with_write_cache(false));
    let d = h.good(&sense6(0x3f, 1), &[]);
    assert_eq!(find_page(&d, 0x08).unwrap()[2], 0x04, "WCE changeable");
    assert_eq!(find_page(&d, 0x0a).unwrap()[4], 0x08, "SWP changeable");
    assert!(find_page(&d, 0x01).unwrap()[2..].iter().all(|&b| b == 0));
    let d = h.good(&sense6(0x08, 2), &[]);
    assert_eq!(find_page(&d, 0x08).unwrap()[2] & 0x04, 0, "default WCE off");
}

#[test]
fn mode_sense10_long_lba() {
    let h = H::new();
    let d = h.good(&[0x5a, 0x10, 0x3f, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    assert_eq!(usize::from(u16::from_be_bytes([d[0], d[1]])), d.len() - 2);
    assert_eq!(d[4] & 1, 1, "LONGLBA");
    assert_eq!(&d[6..8], &[0, 16]);
    assert_eq!(&d[8..16], &BLOCKS.to_be_bytes());
    assert_eq!(&d[20..24], &BS.to_be_bytes());
    let d = h.good(&[0x5a, 0, 0x08, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    assert_eq!(d[4], 0);
    assert_eq!(&d[6..8], &[0, 8]);
}

fn select6(pages: &[u8], bd: Option<u32>) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0];
    if let Some(bs) = bd {
        p[3] = 8;
        p.extend_from_slice(&[0, 0, 0, 0, 0]);
        p.extend_from_slice(&bs.to_be_bytes()[1..]);
    }
    p.extend_from_slice(pages);
    p
}

#[test]
fn mode_select_changes_wce_and_raises_ua_for_others() {
    let h = H::new();
    let n2 = nexus(2);
    h.clear_ua(&n2);
    let mut caching = find_page(&h.good(&sense6(0x08, 0), &[]), 0x08).unwrap();
    caching[2] &= !0x04;
    let p = select6(&caching, Some(512));
    h.good(&[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
    assert_eq!(
        find_page(&h.good(&sense6(0x08, 0), &[]), 0x08).unwrap()[2] & 0x04,
        0
    );
    assert!(!h.lu.mode.wce());
    assert_eq!(
        check_of(h.run_as(&n2, &[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_MODE_PARAMETERS_CHANGED
    );
    // Our own nexus gets no UA; selecting the same values again raises nothing.
    h.good(&[0, 0, 0, 0, 0, 0], &[]);
    h.good(&[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
    assert_eq!(h.run_as(&n2, &[0, 0, 0, 0, 0, 0], &[]).0, Response::GOOD);
}

/// WCE set by the fabric's configuration (LIO `emulate_write_cache` for TCMU) acts as a
/// MODE SELECT through the given nexus: the caching page follows, other nexuses get MODE
/// PARAMETERS CHANGED (SPC-4 7.5.2), the changing nexus and unchanged values get none.
#[test]
fn set_write_cache_acts_like_mode_select() {
    let h = H::new();
    let n2 = nexus(2);
    h.clear_ua(&n2);
    h.good(&[0, 0, 0, 0, 0, 0], &[]);
    let me = h.n.clone();
    h.lu.set_write_cache(false, &me);
    assert_eq!(
        find_page(&h.good(&sense6(0x08, 0), &[]), 0x08).unwrap()[2] & 0x04,
        0
    );
    assert_eq!(
        check_of(h.run_as(&n2, &[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_MODE_PARAMETERS_CHANGED
    );
    h.lu.set_write_cache(false, &me);
    assert_eq!(h.run_as(&n2, &[0, 0, 0, 0, 0, 0], &[]).0, Response::GOOD);
    h.lu.set_write_cache(true, &me);
    assert!(h.lu.mode.wce());
}

#[test]
fn mode_select_swp_write_protects() {
    let h = H::new();
    let mut control = find_page(&h.good(&sense6(0x0a, 0), &[]), 0x0a).unwrap();
    control[4] |= 0x08;
    let mut p = vec![0u8; 8];
    p.extend_from_slice(&control);
    h.good(&[0x55, 0x10, 0, 0, 0, 0, 0, 0, p.len() as u8, 0], &p);
    assert_eq!(h.good(&sense6(0x0a, 0), &[])[2] & 0x80, 0x80, "WP");
    assert_sense(
        h.check(&cdb10(0x2a, 0, 0, 1), &[0; 512]),
        SenseKey::DataProtect,
        0x27,
        0x00,
    );
    h.good(&cdb10(0x28, 0, 0, 1), &[]);
    control[4] &= !0x08;
    let p = select6(&control, None);
    h.good(&[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
    h.good(&cdb10(0x2a, 0, 0, 1), &[0; 512]);
}

#[test]
fn mode_select_validation() {
    let h = H::new();
    let control = find_page(&h.good(&sense6(0x0a, 0), &[]), 0x0a).unwrap();
    let sel = |p: &[u8]| [0x15, 0x10, 0, 0, p.len() as u8, 0];
    // Zero length is fine.
    h.good(&[0x15, 0x10, 0, 0, 0, 0], &[]);
    // PF = 0 and SP = 1 are rejected.
    let p = select6(&control, None);
    assert_invalid_cdb(h.check(&[0x15, 0, 0, 0, p.len() as u8, 0], &p), 1, Some(4));
    assert_invalid_cdb(
        h.check(&[0x15, 0x11, 0, 0, p.len() as u8, 0], &p),
        1,
        Some(0),
    );
    // Changing a non-changeable field (D_SENSE, byte 2 bit 2 of the page at offset 4).
    let mut bad = control.clone();
    bad[2] |= 0x04;
    let p = select6(&bad, None);
    let s = h.check(&sel(&p), &p);
    assert_sense(s, SenseKey::IllegalRequest, 0x26, 0x00);
    assert_eq!(
        s.field_pointer,
        Some(crate::FieldPointer {
            cdb_or_data: false,
            byte: 6,
            bit: Some(2)
        })
    );
    // Wrong page length.
    let mut bad = control.clone();
    bad[1] = 0x08;
    bad.truncate(10);
    let p = select6(&bad, None);
    let s = h.check(&sel(&p), &p);
    assert_eq!(s.field_pointer.unwrap().byte, 5);
    // Unknown page.
    let p = select6(&[0x19, 2, 0, 0], None);
    let s = h.check(&sel(&p), &p);
    assert_eq!((s.asc, s.field_pointer.unwrap().byte), (0x26, 4));
    // Truncated page and truncated header.
    let p = select6(&control[..8], None);
    assert_sense(h.check(&sel(&p), &p), SenseKey::IllegalRequest, 0x1a, 0x00);
    assert_sense(
        h.check(&[0x15, 0x10, 0, 0, 3, 0], &[0, 0, 0]),
        SenseKey::IllegalRequest,
        0x1a,
        0x00,
    );
    // Block descriptor with a different block length.
    let p = select6(&control, Some(4096));
    let s = h.check(&sel(&p), &p);
    assert_eq!((s.asc, s.field_pointer.unwrap().byte), (0x26, 9));
}

#[test]
fn cold_reset_restores_defaults() {
    let h = H::new();
    let mut caching = find_page(&h.good(&sense6(0x08, 0), &[]), 0x08).unwrap();
    caching[2] &= !0x04;
    let p = select6(&caching, None);
    h.good(&[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
    h.lu.task_management(&h.n, crate::Tmf::TargetColdReset);
    assert_eq!(
        check_of(h.run(&[0, 0, 0, 0, 0, 0], &[]).0),
        Sense::UA_POWER_ON
    );
    assert!(h.lu.mode.wce());
}
