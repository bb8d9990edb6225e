//! `modelhub token create|list|revoke`: token management (admin only).
//! `create` prints the token once, on stdout, alone on its line, so that
//! `TOKEN=$(modelhub token create ...)` captures it.

use std::io::Write;

use super::{CliError, Remote, connect};
use crate::api::v1beta1::tokens::TokenRequest;

/// Creates a token and prints it.
pub async fn create(
    remote: &Remote,
    name: &str,
    role: &str,
    realms: &[String],
    privileged: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let (client, fail) = connect(remote)?;
    let created = client
        .create_token(&TokenRequest {
            name: name.to_string(),
            role: role.to_string(),
            realms: (!realms.is_empty()).then(|| realms.to_vec()),
            privileged,
        })
        .await
        .map_err(fail)?;
    writeln!(out, "{}", created.token)?;
    out.flush()?;
    eprintln!(
        "token {:?} created (role {}{}{}): it is shown only this once",
        created.info.name,
        created.info.role,
        created
            .info
            .realms
            .map(|r| format!(", realms {}", r.join(",")))
            .unwrap_or_default(),
        if created.info.privileged {
            ", privileged"
        } else {
            ""
        }
    );
    Ok(())
}

/// Prints every token: NAME, ROLE, REALMS, PRIVILEGED, CREATED.
pub async fn list(remote: &Remote, out: &mut impl Write) -> Result<(), CliError> {
    let (client, fail) = connect(remote)?;
    let tokens = client.list_tokens().await.map_err(fail)?;
    let rows: Vec<[String; 5]> = tokens
        .into_iter()
        .map(|t| {
            [
                t.name,
                t.role,
                t.realms.map_or_else(|| "*".into(), |r| r.join(",")),
                t.privileged.to_string(),
                t.created,
            ]
        })
        .collect();
    let header = ["NAME", "ROLE", "REALMS", "PRIVILEGED", "CREATED"];
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: [&str; 5]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header))?;
    for r in &rows {
        writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]))?;
    }
    out.flush()?;
    Ok(())
}

/// Revokes a token.
pub async fn revoke(remote: &Remote, name: &str, out: &mut impl Write) -> Result<(), CliError> {
    let (client, fail) = connect(remote)?;
    let t = client.revoke_token(name).await.map_err(fail)?;
    writeln!(out, "token {:?} revoked", t.name)?;
    out.flush()?;
    Ok(())
}
