//! The data directory is the owner's alone: the server makes it (or narrows
//! it) to 0700, and the log, the vault and the credentials in it are 0600.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use threshold_server::{Config, Node, fleets};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

async fn open_and_stop(data: &Path) {
    let fleets = fleets(None, data).expect("fleets");
    let node = Node::open(Config::embedded(data, fleets))
        .await
        .expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    node.serve(listener, async {})
        .await
        .expect("serve and stop");
}

#[tokio::test]
async fn a_new_data_directory_and_its_files_are_the_owners_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("fresh").join("data");
    open_and_stop(&data).await;
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    let mut files = 0;
    for entry in std::fs::read_dir(&data).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            files += 1;
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert!(
        files >= 3,
        "the log, the vault and the credentials: {files} files"
    );
}

#[tokio::test]
async fn a_data_directory_others_can_read_is_narrowed() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    open_and_stop(&data).await;
    assert_eq!(mode(&data), 0o700);
}
