//! `modelhub backup --server URL FILE`: downloads the backup of a running
//! server to `FILE.tmp`, syncs it, verifies it whole (trailer, count,
//! checksum, every object), then renames it to `FILE` and syncs the
//! directory. `FILE` only ever appears complete and verified.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::{CliError, connect};
use crate::api::v1beta1::backup::verify;
use crate::client::ClientError;

/// `FILE.tmp`.
fn temp_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Syncs the directory holding `file`, so that its new name is durable.
fn sync_dir(file: &Path) -> std::io::Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Downloads, verifies and places the backup; prints its revision and
/// object count.
pub async fn backup(
    remote: &super::Remote,
    file: &Path,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let temp = temp_path(file);
    let result = download(remote, file, &temp).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    let (revision, objects) = result?;
    writeln!(
        out,
        "backup of revision {revision}: {objects} objects written to {}",
        file.display()
    )?;
    out.flush()?;
    Ok(())
}

async fn download(
    remote: &super::Remote,
    file: &Path,
    temp: &Path,
) -> Result<(u64, u64), CliError> {
    let failed =
        |what: String| CliError::Backup(format!("{what}; {} was not written", file.display()));
    let write_failed = |e: std::io::Error| failed(format!("cannot write {}: {e}", temp.display()));
    let (client, fail) = connect(remote)?;
    let mut stream = Box::pin(client.backup().await.map_err(fail)?);
    let mut f = File::create(temp).map_err(write_failed)?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let cause = match &e {
                ClientError::Transport(t) => super::root_cause(t),
                other => other.to_string(),
            };
            failed(format!(
                "the backup stream from {} broke off after {bytes} bytes ({cause})",
                client.server()
            ))
        })?;
        f.write_all(&chunk).map_err(write_failed)?;
        bytes += chunk.len() as u64;
    }
    f.sync_all().map_err(write_failed)?;
    drop(f);
    let summary = verify(|| File::open(temp).map(BufReader::new)).map_err(|e| {
        failed(format!(
            "the backup from {} is not whole: {e}",
            client.server()
        ))
    })?;
    std::fs::rename(temp, file)
        .map_err(|e| failed(format!("cannot rename {} to it: {e}", temp.display())))?;
    sync_dir(file).map_err(|e| {
        CliError::Backup(format!(
            "{} is written, but syncing its directory failed: {e}",
            file.display()
        ))
    })?;
    Ok((summary.header.revision, summary.objects))
}
