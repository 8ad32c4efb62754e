//! `[[listeners]]`: addresses, TLS certificates and client CAs.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::diag::Diagnostics;
use super::model::*;
use super::reader::Table;
use super::schema::Items;
use super::values::existing_file;
use super::values::required_string;
use crate::core::location::Located;

pub(super) fn listeners(d: &mut Diagnostics, root: &Table) -> Vec<Listener> {
    let mut out: Vec<Listener> = Vec::new();
    for t in root.tables(d, "listeners") {
        let name = required_string(d, &t, "name");
        let listen = required_string(d, &t, "listen");
        let has_tls = t.raw("tls").is_some();
        let tls = t.table(d, "tls").and_then(|tls| {
            let out = listener_tls(d, &tls);
            tls.finish(d);
            out
        });
        let http2 = t.boolean(d, "http2").unwrap_or(has_tls);
        t.finish(d);
        let (Some(name), Some(listen)) = (name, listen) else {
            continue;
        };
        if out.iter().any(|l| l.name == *name.get_ref()) {
            d.error(
                name.span(),
                format!("duplicate listener name `{}`", name.get_ref()),
            );
        }
        let Ok(addr) = listen.get_ref().parse::<SocketAddr>() else {
            d.error(
                listen.span(),
                format!(
                    "`{}` is not an IP:port address (host names are not resolved)",
                    listen.get_ref()
                ),
            );
            continue;
        };
        if out.iter().any(|l| l.addr == addr) {
            d.error(
                listen.span(),
                format!("address {addr} is used by two listeners"),
            );
        }
        if out.len() == crate::core::matching::ListenerSet::MAX {
            d.error(
                name.span(),
                format!(
                    "at most {} [[listeners]] are supported",
                    crate::core::matching::ListenerSet::MAX
                ),
            );
        }
        out.push(Listener {
            name: name.into_inner(),
            listen: listen.into_inner(),
            addr,
            tls,
            http2,
        });
    }
    out
}

/// `tls = { cert, key, sni_certificates = [{ cert, key }, ...] }`: every
/// pair must load and match, so a bad certificate is a `check` error, not a
/// failing handshake.
pub(super) fn listener_tls(d: &mut Diagnostics, tls: &Table) -> Option<ListenerTls> {
    let mut pairs = vec![(
        required_string(d, tls, "cert"),
        required_string(d, tls, "key"),
    )];
    for (i, extra) in tls
        .array(d, "sni_certificates", Items::Tables)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let Some(t) = tls.item_table(
            d,
            "sni_certificates",
            extra,
            format!("{}.sni_certificates[{i}]", tls.section()),
        ) else {
            continue;
        };
        pairs.push((
            required_string(d, &t, "cert"),
            required_string(d, &t, "key"),
        ));
        t.finish(d);
    }
    let client_ca = client_ca(d, tls);
    let mut certificates = Vec::with_capacity(pairs.len());
    let mut ok = true;
    for (cert, key) in pairs {
        let (Some(cert), Some(key)) = (cert, key) else {
            ok = false;
            continue;
        };
        let at = d.location(cert.span());
        let (Some(cert), Some(key)) = (existing_file(d, cert), existing_file(d, key)) else {
            ok = false;
            continue;
        };
        let cert = Located { value: cert, at };
        d.pending(Pending::Certificate {
            cert: cert.clone(),
            key: key.clone(),
        });
        certificates.push((cert, key));
    }
    ok.then_some(ListenerTls {
        certificates,
        client_ca: client_ca?,
    })
}

/// `client_ca` and `client_auth`; `Some(None)` when client certificates
/// are not asked for, `None` on error.
pub(super) fn client_ca(
    d: &mut Diagnostics,
    tls: &Table,
) -> Option<Option<(Located<PathBuf>, ClientAuth)>> {
    let ca = tls.string(d, "client_ca");
    let mode = tls.keyword(
        d,
        "client_auth",
        ClientAuth::Required,
        &[
            ("required", ClientAuth::Required),
            ("optional", ClientAuth::Optional),
        ],
    )?;
    let Some(ca) = ca else {
        if let Some(m) = tls.raw("client_auth") {
            d.error(m.span(), "`client_auth` needs `client_ca`");
            return None;
        }
        return Some(None);
    };
    let at = d.location(ca.span());
    let path = Located {
        value: existing_file(d, ca)?,
        at,
    };
    d.pending(Pending::CaFile(path.clone()));
    Some(Some((path, mode)))
}
