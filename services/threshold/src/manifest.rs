//! `threshold manifest load`: stream a manifest file to a server.

use std::path::PathBuf;

use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_manifest::{COLUMNS, ERROR_COLUMN};
use threshold_manifest_service::client;

use crate::progress::{Counted, Progress, Unit};

/// Options of `threshold manifest load`.
#[derive(clap::Args)]
pub(crate) struct LoadArgs {
    /// The manifest CSV (columns: see crates/manifest).
    file: PathBuf,
    #[command(flatten)]
    server: crate::ServerArgs,
    /// Where refused rows are written, to fix and load again
    /// (default: FILE with `.rejects.csv`).
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Print the summary as JSON: {"manifest_id", "rows", "accepted", "unchanged", "rejected", "rejects_file"}.
    #[arg(long)]
    json: bool,
}

/// Loads the file; returns whether every row was accepted.
pub(crate) async fn load(args: LoadArgs) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let file = tokio::fs::File::open(&args.file)
        .await
        .map_err(|e| format!("cannot open {}: {e}", args.file.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let progress = std::sync::Arc::new(Progress::new("manifest load", Unit::Bytes, size));
    let file = Counted::new(file, std::sync::Arc::clone(&progress));
    let channel = args.server.connect(threshold_auth::Role::Planner).await?;
    let mut grpc = ManifestServiceClient::new(channel);
    let id = args
        .file
        .file_name()
        .map_or_else(|| "manifest".into(), |n| n.to_string_lossy().into_owned());
    let rejects_path = args.rejects.clone().unwrap_or_else(|| {
        let stem = args.file.with_extension("");
        PathBuf::from(format!("{}.rejects.csv", stem.display()))
    });

    // The rejects file is written as rejections arrive; created on the first.
    let mut rejects: Option<csv::Writer<std::fs::File>> = None;
    let mut write_error = None;
    let summary = client::load(&mut grpc, &id, file, |r| {
        if write_error.is_some() {
            return;
        }
        progress.say(&format!(
            "line {}, field {}: {}",
            r.line, r.field, r.message
        ));
        let result = (|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            if rejects.is_none() {
                let mut w = csv::Writer::from_path(&rejects_path)?;
                w.write_record(COLUMNS.iter().chain(std::iter::once(&ERROR_COLUMN)))?;
                rejects = Some(w);
            }
            if let Some(w) = rejects.as_mut() {
                let mut values = r.values.clone();
                values.resize(COLUMNS.len(), String::new());
                values.push(format!("line {}, field {}: {}", r.line, r.field, r.message));
                w.write_record(&values)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            write_error = Some(format!("cannot write {}: {e}", rejects_path.display()));
        }
    })
    .await
    .map_err(|s| format!("{}: {}", args.file.display(), s.message()))?;
    progress.finish(&format!("{} rows read", summary.rows));
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if let Some(mut w) = rejects {
        w.flush()?;
    }
    let rejects_file = (summary.rejected > 0).then(|| rejects_path.display().to_string());
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "manifest_id": summary.manifest_id,
                "rows": summary.rows,
                "accepted": summary.accepted,
                "unchanged": summary.unchanged,
                "rejected": summary.rejected,
                "rejects_file": rejects_file,
            })
        );
    } else {
        println!(
            "{}: {} rows, {} accepted, {} unchanged, {} rejected",
            summary.manifest_id,
            summary.rows,
            summary.accepted,
            summary.unchanged,
            summary.rejected
        );
        if let Some(f) = rejects_file {
            println!("rejected rows written to {f}: fix them and load that file");
        }
    }
    Ok(summary.rejected == 0)
}
