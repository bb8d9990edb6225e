mod common;
use common::*;

#[test]
fn serves_health_and_a_realm() {
    let s = Server::start();
    let c = Client::default();
    assert_eq!(
        c.raw(c.http.get(format!("{}/healthz", s.base))).status(),
        200
    );
    let (st, _) = c.post_yaml(&s.api("/realms"), &shared_example("realm.yaml"));
    assert_eq!(st, 201);
}
