//! Shared fixtures: a fake LIO kernel in a temporary directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustio_config::SaveConfig;
use rustio_lio::fake::FakeKernel;
use rustio_lio::Lio;

/// A temporary directory holding a fake configfs root and backing files.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub kernel: Arc<FakeKernel>,
    pub lio: Lio,
}

impl Env {
    pub fn new() -> Env {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let root = dir.path().join("configfs/target");
        let kernel = FakeKernel::new(&root).expect("fake kernel");
        let lio = Lio::with_backend(&root, kernel.clone()).expect("lio");
        Env { dir, kernel, lio }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("configfs/target")
    }

    /// A path for backing files.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates a file of `size` bytes (a stand-in for a block device too).
    pub fn make_file(&self, name: &str, size: u64) -> PathBuf {
        let p = self.file(name);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        p
    }

    /// A snapshot of every directory, file content and link under the root, for
    /// "nothing changed" assertions.
    pub fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root(), &self.root(), &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            out.push(format!(
                "L {rel} -> {}",
                t.strip_prefix(root).unwrap_or(&t).display()
            ));
        } else if ft.is_dir() {
            out.push(format!("D {rel}"));
            walk(root, &p, out);
        } else {
            let content = std::fs::read_to_string(&p).unwrap_or_else(|_| "<unreadable>".into());
            out.push(format!("F {rel} = {content:?}"));
        }
    }
}

/// A configuration exercising every plugin and fabric rustio manages.
pub fn full_config(env: &Env) -> SaveConfig {
    let disk = env.make_file("disk1.img", 1 << 20);
    let blk = env.make_file("fake-sdb", 4 << 20);
    let text = format!(
        r#"{{
  "fabric_modules": [
    {{"name": "iscsi", "discovery_enable_auth": true, "discovery_userid": "disc", "discovery_password": "discsecret123"}}
  ],
  "storage_objects": [
    {{"plugin": "fileio", "name": "disk1", "dev": "{disk}", "size": 1048576, "write_back": true,
      "wwn": "11111111-2222-4333-8444-555555555555", "attributes": {{"queue_depth": 64}},
      "alua_tpgs": [{{"name": "ao", "tg_pt_gp_id": 10, "alua_access_state": 0, "alua_access_type": 1, "preferred": 1}}]}},
    {{"plugin": "fileio", "name": "disk2", "dev": "{new}", "size": 2097152}},
    {{"plugin": "block", "name": "blk", "dev": "{blk}", "readonly": true}},
    {{"plugin": "ramdisk", "name": "ram", "size": 8388608, "nullio": true}},
    {{"plugin": "pscsi", "name": "pt", "dev": "2:0:1:0"}},
    {{"plugin": "user", "name": "tcmu", "config": "file/test_1", "size": 4096, "hw_max_sectors": 128}}
  ],
  "targets": [
    {{"fabric": "iscsi", "wwn": "iqn.2003-01.org.linux-iscsi.test.x8664:sn.0123456789ab",
      "tpgs": [{{
        "tag": 1, "enable": true,
        "attributes": {{"authentication": 0, "generate_node_acls": 0}},
        "parameters": {{"AuthMethod": "CHAP,None", "MaxConnections": "2"}},
        "luns": [
          {{"index": 0, "storage_object": "/backstores/fileio/disk1", "alias": "aaaaaaaaaa", "alua_tg_pt_gp_name": "ao"}},
          {{"index": 1, "storage_object": "/backstores/block/blk"}},
          {{"index": 2, "storage_object": "/backstores/ramdisk/ram"}}
        ],
        "portals": [{{"ip_address": "0.0.0.0", "port": 3260}}, {{"ip_address": "[::1]", "port": 3261, "iser": true}}],
        "node_acls": [
          {{"node_wwn": "iqn.1993-08.org.debian:01:aaaa", "chap_userid": "alice", "chap_password": "alicesecret1",
            "attributes": {{"nopin_timeout": 30}},
            "mapped_luns": [{{"index": 0, "tpg_lun": 0, "write_protect": false}}, {{"index": 1, "tpg_lun": 2, "write_protect": true}}]}},
          {{"node_wwn": "iqn.1993-08.org.debian:01:bbbb", "mapped_luns": [{{"index": 5, "tpg_lun": 1}}]}}
        ]
      }}, {{
        "tag": 2, "enable": false, "luns": [{{"index": 0, "storage_object": "/backstores/fileio/disk2"}}]
      }}]
    }},
    {{"fabric": "loopback", "wwn": "naa.5001405aaaaaaaaa",
      "tpgs": [{{"tag": 1, "nexus": "naa.5001405bbbbbbbbb", "luns": [{{"index": 0, "storage_object": "/backstores/user/tcmu"}}]}}]
    }},
    {{"fabric": "vhost", "wwn": "naa.5001405ccccccccc",
      "tpgs": [{{"tag": 1, "luns": [{{"index": 0, "storage_object": "/backstores/pscsi/pt"}}]}}]
    }}
  ]
}}"#,
        disk = disk.display(),
        new = env.file("disk2.img").display(),
        blk = blk.display(),
    );
    SaveConfig::from_json(&text).expect("fixture parses")
}
