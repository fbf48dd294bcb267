//! The server refuses to start on a vault that was never used while its
//! log already holds data sealed under another one: the vault file lost or
//! moved, or `--vault` pointing elsewhere. With the right vault back it
//! starts, and a new data directory or a log without sealed data starts as
//! before.

use std::path::{Path, PathBuf};

use threshold_auth::{LocalTokens, Role};
use threshold_domain::{DomainEvent, pb};
use threshold_log::Position;
use threshold_privacy::{VAULT_FILE, Vault};
use threshold_server::{Config, Error, Node, fleets};
use threshold_testkit::fixtures::{load_manifest, manifest, manifested};

/// Runs `f` on a runtime of its own, dropped after it: every task of a
/// server it opened ends, so its files are closed before the next phase.
fn phase<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(f)
}

fn config(data: &Path, vault: Option<&Path>) -> Config {
    let mut config = Config::embedded(data, fleets(None, data).expect("fleets"));
    config.placement.vault = vault.map(Path::to_path_buf);
    config
}

/// Opens a server on `data` (its vault in `vault`, default `data`), loads
/// a Stockholm manifest of two parcels over gRPC, and stops it.
async fn load_and_stop(data: &Path) {
    let node = Node::open(config(data, None)).await.expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(node.serve(listener, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let planner = LocalTokens::load(data)
        .expect("tokens")
        .channel(channel, Role::Planner)
        .expect("planner");
    load_manifest(
        planner,
        "day.csv",
        &manifest(
            "SE-1,nordshop,SE,STO-1,2026-11-23,Gatan 1,111 51,Stockholm,59.33,18.06,doorstep,1,,\n\
             SE-2,nordshop,SE,STO-1,2026-11-23,Gatan 2,111 51,Stockholm,59.33,18.06,doorstep,1,,\n",
        ),
    )
    .await;
    let _ = stop.send(());
    server.await.expect("server task").expect("serve and stop");
}

/// Moves the vault's files (the database and any `-wal`/`-shm`) from
/// directory `from` to directory `to`.
fn move_vault(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("{VAULT_FILE}{suffix}");
        if from.join(&name).exists() {
            std::fs::rename(from.join(&name), to.join(&name)).expect("move the vault");
        }
    }
}

fn refused(result: threshold_server::Result<Node>, vault: &Path) -> String {
    let err = match result {
        Err(e) => e,
        Ok(_) => panic!("the server opened on an unused vault over sealed data"),
    };
    assert!(matches!(err, Error::VaultMismatch(_)), "{err:?}");
    let message = err.to_string();
    let file = vault.join(VAULT_FILE).display().to_string();
    for said in [
        file.as_str(),
        "holds no keys",
        "sealed under another vault",
        "--vault",
    ] {
        assert!(message.contains(said), "{said:?}: {message}");
    }
    message
}

#[test]
fn a_lost_vault_over_sealed_data_is_refused_and_the_vault_put_back_opens() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).expect("mkdir");
    phase(load_and_stop(&data));

    // The vault file lost: refused, naming it, and no empty vault is left
    // where the right one goes back.
    move_vault(&data, &aside);
    let message = phase(async { refused(Node::open(config(&data, None)).await, &data) });
    assert!(message.contains("a parcel's address"), "{message}");
    assert!(
        !data.join(VAULT_FILE).exists(),
        "the refused start made no vault"
    );

    // `--vault` at a directory without one, or with a vault never used
    // (kept: it is not this start's to remove).
    let elsewhere = dir.path().join("elsewhere");
    phase(async {
        refused(
            Node::open(config(&data, Some(&elsewhere))).await,
            &elsewhere,
        )
    });
    drop(Vault::open(&elsewhere).expect("an unused vault"));
    phase(async {
        refused(
            Node::open(config(&data, Some(&elsewhere))).await,
            &elsewhere,
        )
    });
    assert!(elsewhere.join(VAULT_FILE).exists());

    // The vault back: the server opens and the sealed addresses open.
    move_vault(&aside, &data);
    phase(async {
        let node = Node::open(config(&data, None)).await.expect("opens");
        let first = node
            .log()
            .read_all(Position::ORIGIN, 1)
            .await
            .expect("read");
        let event = first.first().expect("the first parcel");
        let Ok(DomainEvent::Parcel(pb::parcel_event::Event::Manifested(m))) = event.decode() else {
            panic!("not a manifested parcel: {event:?}");
        };
        let sealed = m.sealed_address.expect("sealed");
        let address: pb::Address = node
            .vault()
            .unseal_message(&sealed, &event.stream.to_string())
            .expect("authentic")
            .expect("its key is in the vault");
        // Rows are decided concurrently: either parcel may come first.
        assert_eq!(
            address.street,
            m.parcel_id.replace("SE-", "Gatan "),
            "{}",
            m.parcel_id
        );
    });
}

#[test]
fn a_new_data_directory_and_a_log_without_sealed_data_open_on_a_new_vault() {
    let dir = tempfile::tempdir().expect("dir");
    let data: PathBuf = dir.path().join("data");
    // A new data directory: an empty log, a new vault.
    phase(async {
        let node = Node::open(config(&data, None))
            .await
            .expect("a fresh start");
        // Parcels with no address: nothing sealed.
        manifested(&*node.log(), &["SE-1", "SE-2"]).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        node.serve(listener, async {}).await.expect("stop");
    });
    // The vault removed: the log holds nothing sealed, so a new one is fine.
    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).expect("mkdir");
    move_vault(&data, &aside);
    phase(async {
        let node = Node::open(config(&data, None)).await.expect("opens");
        assert_eq!(node.log().head().await.expect("head"), Position(2));
    });
}
