//! The vault on Kafka ([`KafkaVault`]) as two processes see it, each with
//! its own reader of one vault topic on the test broker
//! (`THRESHOLD_TEST_KAFKA`): the same secret, households and keys however
//! they race, data sealed in one opened in the other, an erasure in one
//! counting in the other, nothing in the clear on the broker, and a
//! key-encryption key rotation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use threshold_log::kafka::{KafkaOptions, KafkaTable};
use threshold_privacy::{Error, Kek, Keks, Vault};
use threshold_server::{KafkaVault, vault_topic};

fn brokers() -> String {
    std::env::var("THRESHOLD_TEST_KAFKA").unwrap_or_else(|_| {
        panic!("THRESHOLD_TEST_KAFKA is not set: `make test` starts a broker on loopback")
    })
}

fn kek() -> Kek {
    Kek::from_hex(&Kek::generate_hex(), "test").expect("a key")
}

async fn open(prefix: &str, name: &str, keks: &Keks) -> Result<Vault, Error> {
    Ok(Vault::with_store(
        KafkaVault::open(&brokers(), prefix, name, keks.clone()).await?,
    ))
}

fn address(n: usize) -> [String; 4] {
    [
        format!("Storgatan {n}"),
        "111 22".into(),
        "Stockholm".into(),
        "SE".into(),
    ]
}

fn parts(a: &[String; 4]) -> [&str; 4] {
    [&a[0], &a[1], &a[2], &a[3]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_vault_on_kafka_and_an_erasure_counts_in_both() {
    let prefix = format!("vault{}", Kek::generate_hex()[..12].to_owned());
    let keks = Keks::new(kek(), []);
    let a = Arc::new(open(&prefix, "a", &keks).await.expect("open a"));
    let b = Arc::new(open(&prefix, "b", &keks).await.expect("open b"));
    assert!(a.is_unused().unwrap() && b.is_unused().unwrap());

    // Households and keys made by both at once: each is made once, and
    // both use the first.
    let race = |vault: Arc<Vault>| {
        std::thread::spawn(move || {
            (0..12)
                .map(|n| {
                    let hh = vault.household(&parts(&address(n))).expect("household");
                    let sealed = vault
                        .seal(&hh.subject, &format!("parcel/SE-{n}"), b"59.3,18.0")
                        .expect("seal");
                    (hh.subject, sealed)
                })
                .collect::<Vec<_>>()
        })
    };
    let (from_a, from_b) = (race(Arc::clone(&a)), race(Arc::clone(&b)));
    let (from_a, from_b) = (from_a.join().expect("a"), from_b.join().expect("b"));
    for (n, ((sa, sealed_a), (sb, sealed_b))) in from_a.iter().zip(&from_b).enumerate() {
        assert_eq!(sa, sb, "address {n}: one household");
        assert_eq!(sealed_a.key_id, sealed_b.key_id, "address {n}: one key");
        // What one sealed, the other opens.
        let context = format!("parcel/SE-{n}");
        for vault in [&a, &b] {
            assert_eq!(
                vault.unseal(sealed_a, &context).unwrap().as_deref(),
                Some(&b"59.3,18.0"[..])
            );
            assert_eq!(
                vault.unseal(sealed_b, &context).unwrap().as_deref(),
                Some(&b"59.3,18.0"[..])
            );
        }
    }
    assert!(!a.is_unused().unwrap());

    // Nothing in the clear on the broker: no subject, no address, no key.
    let raw = KafkaTable::open(
        &KafkaOptions::new(brokers(), "", "raw"),
        &vault_topic(&prefix),
    )
    .await
    .expect("raw reader");
    let state = raw.state();
    let subject = &from_a[0].0;
    for (key, stored) in state.entries.iter() {
        assert!(
            !key.contains(subject.as_str()) && !key.contains("Storgatan"),
            "{key}"
        );
        let text = String::from_utf8_lossy(&stored.value);
        assert!(!text.contains("Storgatan"), "{key}");
        if key.starts_with("key/") || key.starts_with("secret/") {
            assert!(stored.value.starts_with(b"W1"), "{key}: wrapped");
        }
    }
    // One claim per slot is left: 1 secret, 12 households, 12 keys.
    assert_eq!(state.entries.len(), 25, "{:?}", state.entries.keys());

    // Erasure in b: a's copy loses the key within moments.
    let (forgotten, sealed) = (&from_a[3].0, &from_a[3].1);
    let erased_at = Instant::now();
    assert_eq!(b.forget(forgotten).unwrap(), 1);
    assert_eq!(b.unseal(sealed, "parcel/SE-3").unwrap(), None);
    while a.unseal(sealed, "parcel/SE-3").unwrap().is_some() {
        assert!(
            erased_at.elapsed() < Duration::from_secs(10),
            "not erased in a"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "erasure: unreadable in the other process {:.0} ms after forget began",
        erased_at.elapsed().as_secs_f64() * 1000.0
    );
    // Nothing new is sealed for it in either, and its address starts anew.
    for vault in [&a, &b] {
        assert!(matches!(
            vault.seal(forgotten, "parcel/SE-3", b"x"),
            Err(Error::Forgotten { .. })
        ));
        assert!(vault.is_subject_forgotten(forgotten).unwrap());
    }
    let again = a.household(&parts(&address(3))).expect("a new household");
    assert_ne!(&again.subject, forgotten);
    assert_eq!(
        b.unseal(&from_a[4].1, "parcel/SE-4").unwrap().as_deref(),
        Some(&b"59.3,18.0"[..])
    );

    // A process with another key-encryption key cannot open the vault, and
    // says which key it would need.
    let wrong = Keks::new(kek(), []);
    let err = open(&prefix, "c", &wrong).await.unwrap_err().to_string();
    assert!(
        err.contains(&keks.current().id_hex()) && err.contains("not given"),
        "{err}"
    );

    // Rotation: the new key first, the old one after; rewrap; then the new
    // key alone opens everything that was live.
    let new = kek();
    let both = Keks::new(new.clone(), [keks.current().clone()]);
    let rotating = KafkaVault::open(&brokers(), &prefix, "rotate", both)
        .await
        .expect("open with both keys");
    let rewrapped = tokio::task::spawn_blocking(move || rotating.rewrap())
        .await
        .expect("thread")
        .expect("rewrap");
    // The secret and the 12 keys, less the forgotten one's, and the key of
    // the new household at its address.
    assert_eq!(rewrapped, 13);
    let renewed = open(&prefix, "d", &Keks::new(new, []))
        .await
        .expect("the new key alone");
    for (n, (_, sealed)) in from_a.iter().enumerate().filter(|(n, _)| *n != 3) {
        assert_eq!(
            renewed
                .unseal(sealed, &format!("parcel/SE-{n}"))
                .unwrap()
                .as_deref(),
            Some(&b"59.3,18.0"[..]),
            "{n}"
        );
    }
    assert_eq!(renewed.unseal(sealed, "parcel/SE-3").unwrap(), None);
    // The new household at the forgotten one's address, and its key.
    let hh = renewed.household(&parts(&address(3))).expect("a household");
    assert_eq!(hh.subject, again.subject);
    renewed
        .seal(&hh.subject, "parcel/SE-3b", b"x")
        .expect("its key, rewrapped");
    let old_only = open(&prefix, "e", &keks).await;
    assert!(
        old_only.is_err(),
        "the old key alone no longer opens the vault"
    );
}
