//! The v1beta1 URL layout: route templates (`{realm}` for a name), as the
//! server's router and the OpenAPI document spell them, and the concrete,
//! percent-encoded paths a client sends.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::model::{Kind, Path};

/// The API base path.
pub const BASE: &str = "/api/v1beta1";

/// The route of `kind`'s collection under its parents (`/realms/{realm}/spaces`).
pub fn collection_route(kind: Kind) -> String {
    let mut route = String::from(BASE);
    for k in Kind::ALL.iter().take_while(|k| **k < kind) {
        route.push_str(&format!(
            "/{}/{{{}}}",
            k.plural(),
            k.as_str().to_ascii_lowercase()
        ));
    }
    route.push('/');
    route.push_str(kind.plural());
    route
}

/// The route of one object of `kind`.
pub fn item_route(kind: Kind) -> String {
    format!(
        "{}/{{{}}}",
        collection_route(kind),
        kind.as_str().to_ascii_lowercase()
    )
}

/// The route of the status subresource of one object of `kind`.
pub fn status_route(kind: Kind) -> String {
    format!("{}/status", item_route(kind))
}

/// The route of an object's finalizers subresource.
pub fn finalizers_route(kind: Kind) -> String {
    format!("{}/finalizers", item_route(kind))
}

/// The route listing `kind` across scopes (`/api/v1beta1/cells`, narrowed
/// by `?realm=`...); for realms, their collection.
pub fn cross_scope_route(kind: Kind) -> String {
    format!("{BASE}/{}", kind.plural())
}

/// The route of the watch over every kind.
pub fn watch_route() -> String {
    format!("{BASE}/watch")
}

/// The route of apply.
pub fn apply_route() -> String {
    format!("{BASE}/apply")
}

/// The route of the backup of the whole store.
pub fn backup_route() -> String {
    format!("{BASE}/backup")
}

/// The tokens' collection.
pub fn tokens_route() -> String {
    format!("{BASE}/tokens")
}

/// One token, by name.
pub fn token_route() -> String {
    format!("{BASE}/tokens/{{name}}")
}

/// The URL path of an object (`/api/v1beta1/realms/r/spaces/s`), each name
/// percent-encoded.
pub fn object_path(path: &Path) -> String {
    let mut url = String::from(BASE);
    for (kind, name) in Kind::ALL.iter().zip(path.names()) {
        url.push('/');
        url.push_str(kind.plural());
        url.push('/');
        url.extend(utf8_percent_encode(name, ENCODED));
    }
    url
}

/// Every byte but RFC 3986's unreserved characters (letters, digits, `-`,
/// `.`, `_`, `~`).
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a path segment or query value: RFC 3986 unreserved
/// characters pass through, every other byte is `%XX`.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_hierarchy() {
        assert_eq!(collection_route(Kind::Realm), "/api/v1beta1/realms");
        assert_eq!(
            item_route(Kind::Container),
            "/api/v1beta1/realms/{realm}/spaces/{space}/stacks/{stack}/cells/{cell}/containers/{container}"
        );
        assert_eq!(
            status_route(Kind::Realm),
            "/api/v1beta1/realms/{realm}/status"
        );
        assert_eq!(cross_scope_route(Kind::Cell), "/api/v1beta1/cells");
        assert_eq!(
            cross_scope_route(Kind::Realm),
            collection_route(Kind::Realm)
        );
    }

    #[test]
    fn object_paths_are_percent_encoded() {
        let p = Path::new(
            Kind::Cell,
            vec!["r".into(), "s p".into(), "t".into(), "c".into()],
        );
        assert_eq!(
            object_path(&p),
            "/api/v1beta1/realms/r/spaces/s%20p/stacks/t/cells/c"
        );
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(
            percent_encode("a/b?c&d=e%f+g é"),
            "a%2Fb%3Fc%26d%3De%25f%2Bg%20%C3%A9"
        );
    }

    /// What a client encodes, the server reads back as it was: path
    /// segments are percent-decoded, query values form-decoded.
    #[test]
    fn the_server_decodes_what_the_client_encodes() {
        for s in [
            "plain", "s p", "a/b", "x?y&z=w", "100%", "a+b", "_~.-", "é✓", "#frag",
        ] {
            let encoded = percent_encode(s);
            assert_eq!(
                percent_encoding::percent_decode_str(&encoded).decode_utf8_lossy(),
                s
            );
            let query = format!("realm={encoded}");
            let (_, value) = form_urlencoded::parse(query.as_bytes()).next().unwrap();
            assert_eq!(value, s);
        }
    }
}
