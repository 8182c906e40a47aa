//! Synchronize end to end: SCIM pushes on one side, the admin API's
//! preview, runs and member directory on the other, over a real server and
//! a real SQLite file.

use events::event::TokenScope;
use serde_json::{Value, json};

use crate::scim::Scim;
use crate::util::TestServer;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The admin API as an admin token reaches it.
pub(crate) struct Admin<'s> {
    server: &'s TestServer,
    token: String,
}

impl Admin<'_> {
    pub(crate) async fn new<'s>(server: &'s TestServer, tenant: &str) -> Admin<'s> {
        let (_, token) = server.token(tenant, TokenScope::Admin).await;
        Admin { server, token }
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .server
            .client
            .request(method, self.server.url(&format!("/api/v1{path}")))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.send(reqwest::Method::PUT, path, Some(body)).await;
        assert_eq!(status, 200, "PUT {path}: {body}");
        body
    }

    pub(crate) async fn sync(&self) -> Value {
        let (status, body) = self.send(reqwest::Method::POST, "/provisioning/sync", None).await;
        assert_eq!(status, 200, "sync: {body}");
        body
    }

    /// Every member, keyed by userName.
    pub(crate) async fn members(&self) -> serde_json::Map<String, Value> {
        let body = self.get("/members?limit=1000").await;
        body["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|member| (member["user_name"].as_str().unwrap().to_owned(), member.clone()))
            .collect()
    }
}

fn counts(nonzero: &[(&str, u64)]) -> Value {
    let mut all = json!({
        "join": 0, "restore": 0, "update": 0, "role_change": 0, "disable": 0,
        "enable": 0, "leave": 0, "purge": 0, "rejected": 0, "held": 0
    });
    for (kind, count) in nonzero {
        all[*kind] = json!(count);
    }
    all
}

pub(crate) async fn user(
    scim: &Scim<'_>,
    name: &str,
    external_id: &str,
    department: &str,
) -> String {
    let answer = scim
        .post(
            "/Users",
            json!({
                "schemas": [USER, ENTERPRISE],
                "userName": name, "externalId": external_id, "active": true,
                "name": {"givenName": name.split('@').next().unwrap(), "familyName": "Test"},
                "emails": [
                    {"value": format!("home-{name}"), "type": "home"},
                    {"value": name, "type": "work", "primary": true}
                ],
                ENTERPRISE: {"department": department}
            }),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.body["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn group(scim: &Scim<'_>, name: &str, members: &[&str]) -> String {
    let members: Vec<Value> = members.iter().map(|id| json!({"value": id})).collect();
    let answer = scim
        .post("/Groups", json!({"schemas": [GROUP], "displayName": name, "members": members}))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.body["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn patch_user(scim: &Scim<'_>, id: &str, operations: Value) {
    let answer = scim
        .send(
            reqwest::Method::PATCH,
            &format!("/Users/{id}"),
            Some(json!({"schemas": [PATCH], "Operations": operations})),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// Deactivates one user (Entra ID's words: `Replace`, `"False"`), deletes
/// another, and moves a third to the department "Platform".
pub(crate) async fn disable_delete_and_move(
    scim: &Scim<'_>,
    disable: &str,
    delete: &str,
    change: &str,
) {
    patch_user(scim, disable, json!([{"op": "Replace", "path": "active", "value": "False"}])).await;
    assert_eq!(scim.delete(&format!("/Users/{delete}")).await.status, 204);
    patch_user(
        scim,
        change,
        json!([{"op": "replace", "path": format!("{ENTERPRISE}:department"), "value": "Platform"}]),
    )
    .await;
}

/// The issue's story: push, preview, synchronize; deactivate, delete and
/// change; preview exactly those; synchronize; a rerun does nothing; a
/// user re-created within the grace gets its member back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_flow_into_members_at_synchronize_and_only_then() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    admin
        .put(
            "/provisioning/role-bindings",
            json!({
                "roles": ["admin", "editor", "viewer"],
                "default_role": "viewer",
                "bindings": [
                    {"group": "engineering", "role": "editor"},
                    {"group": "Admins", "role": "admin"}
                ]
            }),
        )
        .await;

    let alice = user(&scim, "alice@example.com", "ext-alice", "R&D").await;
    let bob = user(&scim, "bob@example.com", "ext-bob", "Sales").await;
    let carol = user(&scim, "carol@example.com", "ext-carol", "Ops").await;
    group(&scim, "Engineering", &[&alice, &bob]).await;
    group(&scim, "Admins", &[&carol]).await;

    // Nothing reaches members before Synchronize.
    assert_eq!(admin.get("/members").await["total"], 0);
    let preview = admin.get("/provisioning/pending").await;
    assert_eq!(preview["counts"], counts(&[("join", 3)]), "{preview}");
    assert_eq!(preview["pending_users"], 3);
    assert_eq!(preview["pending_groups"], 2);
    assert_eq!(preview["safeguard"], Value::Null);
    let joins: Vec<&str> = preview["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["action"].as_str().unwrap())
        .collect();
    assert_eq!(joins, ["join", "join", "join"]);

    let run = admin.sync().await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["counts"], counts(&[("join", 3)]));
    let members = admin.members().await;
    let member_alice = &members["alice@example.com"];
    assert_eq!(member_alice["status"], "active");
    assert_eq!(
        member_alice["properties"],
        json!({
            "email": "alice@example.com", "given_name": "alice", "family_name": "Test",
            "department": "R&D"
        })
    );
    assert_eq!(member_alice["roles"], json!(["editor"]));
    assert_eq!(member_alice["source"], json!({"scim_user_id": alice, "external_id": "ext-alice"}));
    assert_eq!(members["bob@example.com"]["roles"], json!(["editor"]));
    assert_eq!(members["carol@example.com"]["roles"], json!(["admin"]));
    let carol_member = members["carol@example.com"]["member_id"].as_str().unwrap().to_owned();

    disable_delete_and_move(&scim, &bob, &carol, &alice).await;
    let head = server.log_head();
    let preview = admin.get("/provisioning/pending").await;
    assert_eq!(
        preview["counts"],
        counts(&[("update", 1), ("disable", 1), ("leave", 1)]),
        "{preview}"
    );
    let by_user: serde_json::Map<String, Value> = preview["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| (item["user_name"].as_str().unwrap().to_owned(), item.clone()))
        .collect();
    assert_eq!(by_user["alice@example.com"]["action"], "update");
    assert_eq!(
        by_user["alice@example.com"]["changes"],
        json!({"department": {"from": "R&D", "to": "Platform"}})
    );
    assert_eq!(by_user["bob@example.com"]["action"], "disable");
    assert_eq!(by_user["carol@example.com"]["action"], "leave");
    // The preview wrote nothing.
    assert_eq!(server.log_head(), head, "a preview appends no event");
    assert_eq!(admin.members().await["bob@example.com"]["status"], "active");

    let run = admin.sync().await;
    assert_eq!(run["counts"], counts(&[("update", 1), ("disable", 1), ("leave", 1)]));
    let members = admin.members().await;
    assert_eq!(members["alice@example.com"]["properties"]["department"], "Platform");
    assert_eq!(members["bob@example.com"]["status"], "disabled");
    assert_eq!(members["bob@example.com"]["revoke_sessions"], true);
    assert_eq!(members["bob@example.com"]["properties"]["department"], "Sales");
    assert_eq!(members["carol@example.com"]["status"], "left");
    assert!(members["carol@example.com"]["grace_until"].as_str().is_some());

    // A rerun with nothing pending changes nothing and appends no member
    // event: only its own run record (started, completed).
    let tenant = scim_tenant(&server).await;
    let before = server.store.log().tenant_head(&tenant).unwrap();
    let rerun = admin.sync().await;
    assert_eq!(rerun["counts"], counts(&[]), "{rerun}");
    let appended: Vec<String> =
        server.events_after(before, Some(&tenant)).into_iter().map(|(_, stream)| stream).collect();
    let run_stream = format!("sync:{}", rerun["run_id"].as_str().unwrap());
    assert_eq!(appended, vec![run_stream.clone(), run_stream], "only the run's own events");
    assert_eq!(admin.get("/provisioning/pending").await["total"], 0);

    // Re-created with the same externalId within the grace: the same member.
    let again = user(&scim, "carol@example.com", "ext-carol", "Ops").await;
    assert_ne!(again, carol);
    let preview = admin.get("/provisioning/pending").await;
    // It is not in Admins any more (a new SCIM user): back to the default role.
    assert_eq!(preview["counts"], counts(&[("restore", 1), ("role_change", 1)]), "{preview}");
    assert_eq!(preview["items"][0]["roles"], json!({"from": ["admin"], "to": ["viewer"]}));
    admin.sync().await;
    let members = admin.members().await;
    assert_eq!(members["carol@example.com"]["member_id"], carol_member.as_str());
    assert_eq!(members["carol@example.com"]["status"], "active");
    assert_eq!(members["carol@example.com"]["source"]["scim_user_id"], again.as_str());
    assert_eq!(members["carol@example.com"]["roles"], json!(["viewer"]));

    let runs = admin.get("/provisioning/syncs").await;
    assert_eq!(runs["total"], 4);
    assert_eq!(runs["runs"][0]["counts"]["restore"], 1);
}

/// The tenant's mapping with a `user_type` property from `userType` that
/// allows only `Premium` and `Standard` (default `Standard`); not yet set.
async fn with_user_type(admin: &Admin<'_>) -> Value {
    let mut mapping = admin.get("/provisioning/mapping").await;
    mapping["properties"].as_array_mut().unwrap().push(json!({
        "property": "user_type", "source": "userType", "type": "string",
        "allowed": ["Premium", "Standard"], "default": "Standard"
    }));
    mapping
}

/// The rules Synchronize promises at its edges: a binding can match a
/// group by externalId; a user created inactive is not a member until it is
/// activated; a deactivation disables a member even when its new values are
/// ones the mapping rejects (a bad value never keeps a leaver in); and a
/// settings PUT says whether it changed anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_by_external_id_inactive_users_and_deprovisioning_with_bad_values() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let mapping = with_user_type(&admin).await;
    let put = |body: Value, path: &'static str| {
        let (server, token) = (&server, admin.token.clone());
        async move {
            let response = server
                .client
                .put(server.url(&format!("/api/v1{path}")))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["x-rollcall-changed"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(put(mapping.clone(), "/provisioning/mapping").await, "true");
    assert_eq!(put(mapping.clone(), "/provisioning/mapping").await, "false", "the same again");
    let bindings = json!({
        "roles": ["admin", "viewer"], "default_role": "viewer",
        "bindings": [{"group": "ext-admins", "match": "externalId", "role": "admin"}]
    });
    let head = server.log_head();
    assert_eq!(put(bindings.clone(), "/provisioning/role-bindings").await, "true");
    assert_eq!(put(bindings, "/provisioning/role-bindings").await, "false");
    assert_eq!(server.log_head(), head + 1, "an unchanged setting appends nothing");

    let ann = user(&scim, "ann@example.com", "ext-ann", "R&D").await;
    let ben = user(&scim, "ben@example.com", "ext-ben", "R&D").await;
    // Its displayName looks like another binding's; its externalId is what
    // the binding names.
    let admins = scim
        .post(
            "/Groups",
            json!({"schemas": [GROUP], "displayName": "Viewers", "externalId": "ext-admins",
                   "members": [{"value": ann}]}),
        )
        .await;
    assert_eq!(admins.status, 201, "{}", admins.body);
    let dormant = scim
        .post("/Users", json!({"schemas": [USER], "userName": "dora@example.com", "active": false}))
        .await;
    assert_eq!(dormant.status, 201);
    let dora = dormant.body["id"].as_str().unwrap().to_owned();

    let run = admin.sync().await;
    assert_eq!(run["counts"], counts(&[("join", 2)]), "dora is not a member: {run}");
    let members = admin.members().await;
    assert_eq!(members["ann@example.com"]["roles"], json!(["admin"]), "bound by externalId");
    assert_eq!(members["ben@example.com"]["roles"], json!(["viewer"]));
    assert!(!members.contains_key("dora@example.com"));
    assert_eq!(admin.get("/provisioning/pending").await["total"], 0, "nor is she pending");

    // Activated, she joins.
    patch_user(&scim, &dora, json!([{"op": "replace", "path": "active", "value": true}])).await;
    assert_eq!(admin.sync().await["counts"], counts(&[("join", 1)]));

    // Deactivated together with a value the mapping rejects: still
    // disabled, and the rejection is reported; an active user with the same
    // value is only rejected.
    patch_user(
        &scim,
        &ben,
        json!([{"op": "replace", "path": "active", "value": false},
               {"op": "replace", "path": "userType", "value": "Gold"}]),
    )
    .await;
    patch_user(&scim, &ann, json!([{"op": "replace", "path": "userType", "value": "Gold"}])).await;
    let preview = admin.get("/provisioning/pending").await;
    assert_eq!(preview["counts"], counts(&[("disable", 1), ("rejected", 1)]), "{preview}");
    let run = admin.sync().await;
    assert_eq!(run["counts"], counts(&[("disable", 1), ("rejected", 1)]), "{run}");
    let members = admin.members().await;
    assert_eq!(members["ben@example.com"]["status"], "disabled");
    assert_eq!(members["ben@example.com"]["revoke_sessions"], true);
    assert_eq!(members["ann@example.com"]["status"], "active");
    assert_eq!(members["ann@example.com"]["properties"]["user_type"], "Standard", "not applied");
}

/// A value the mapping does not allow is rejected with its reason and
/// applied nowhere; a mapping change re-applies to every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disallowed_value_is_rejected_and_a_mapping_change_reaches_every_member() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let mut mapping = with_user_type(&admin).await;
    admin.put("/provisioning/mapping", mapping.clone()).await;

    user(&scim, "ann@example.com", "a", "R&D").await;
    user(&scim, "ben@example.com", "b", "R&D").await;
    let gold = scim
        .post(
            "/Users",
            json!({"schemas": [USER], "userName": "gus@example.com", "userType": "Gold"}),
        )
        .await;
    assert_eq!(gold.status, 201);

    let preview = admin.get("/provisioning/pending").await;
    assert_eq!(preview["counts"], counts(&[("join", 2), ("rejected", 1)]), "{preview}");
    let rejected = preview["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["action"] == "rejected")
        .unwrap()
        .clone();
    assert_eq!(rejected["user_name"], "gus@example.com");
    let reason = rejected["reason"].as_str().unwrap();
    assert!(reason.contains("user_type") && reason.contains("\"Gold\""), "{reason}");

    let run = admin.sync().await;
    assert_eq!(run["counts"], counts(&[("join", 2), ("rejected", 1)]));
    let members = admin.members().await;
    assert_eq!(members.len(), 2);
    assert_eq!(members["ann@example.com"]["properties"]["user_type"], "Standard");
    // Still pending, with its reason, until the IdP sends an allowed value.
    let preview = admin.get("/provisioning/pending").await;
    assert_eq!(preview["counts"], counts(&[("rejected", 1)]), "{preview}");

    // A new property reaches every member at the next run.
    mapping["properties"].as_array_mut().unwrap().push(json!({
        "property": "work_email", "source": "emails[type eq \"work\"].value"
    }));
    admin.put("/provisioning/mapping", mapping).await;
    let preview = admin.get("/provisioning/pending").await;
    assert_eq!(preview["counts"], counts(&[("update", 2), ("rejected", 1)]), "{preview}");
    admin.sync().await;
    let members = admin.members().await;
    assert_eq!(members["ben@example.com"]["properties"]["work_email"], "ben@example.com");
}

/// Two triggers while a run is in flight: the second is refused with 409,
/// the first applies every change once. The overlap is certain: a command
/// holds the writer, so the run that takes the lock cannot finish (its
/// `SyncStarted` waits behind it) until the other has been answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_triggers_apply_each_change_once() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    bulk_users(&scim, 0, 300).await;
    let (release, held) = std::sync::mpsc::channel::<()>();
    let blocker = server.store.command(None, move |_| {
        let _ = held.recv();
        Ok(())
    });
    let mut first = Box::pin(admin.send(reqwest::Method::POST, "/provisioning/sync", None));
    let mut second = Box::pin(admin.send(reqwest::Method::POST, "/provisioning/sync", None));
    // Whichever takes the lock waits on the writer; the other is answered.
    let answered = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::select! {
            answer = &mut first => (answer, true),
            answer = &mut second => (answer, false),
        }
    });
    let (refused, first_refused) =
        answered.await.expect("neither trigger was refused while the other ran");
    let running = if first_refused { second } else { first };
    let (status, body) = refused;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("already running"), "{body}");
    release.send(()).unwrap();
    blocker.await.unwrap();
    let (status, body) = running.await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["counts"]["join"], 300, "{body}");
    assert_eq!(admin.get("/members").await["total"], 300);
    assert_eq!(admin.get("/provisioning/syncs").await["runs"].as_array().unwrap().len(), 1);
}

/// The deprovisioning safeguard holds a mass disable; approving applies
/// it, rejecting leaves members as they were and the changes pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_deactivation_is_held_until_an_admin_decides() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let ids = members_then_deactivated(&scim, &admin, 100, 30).await;
    // One ordinary change rides along: it is applied, not held.
    patch_user(&scim, &ids[50], json!([{"op": "replace", "path": "title", "value": "Lead"}])).await;

    let preview = admin.get("/provisioning/pending").await;
    assert!(preview["safeguard"].as_str().unwrap().contains("30 of 100"), "{preview}");
    let held = admin.sync().await;
    assert_eq!(held["status"], "held", "{held}");
    assert!(held["held_reason"].as_str().unwrap().contains("approve"));
    assert_eq!(held["counts"], counts(&[("held", 30), ("update", 1)]));
    let members = admin.members().await;
    assert_eq!(members["user000@example.com"]["status"], "active");
    assert_eq!(members["user050@example.com"]["properties"]["title"], "Lead");

    // Rejected: untouched, still pending (and held again by the next run).
    let run_id = held["run_id"].as_str().unwrap();
    let (status, rejected) = admin
        .send(reqwest::Method::POST, &format!("/provisioning/syncs/{run_id}/reject"), None)
        .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(admin.members().await["user000@example.com"]["status"], "active");
    assert_eq!(admin.get("/provisioning/pending").await["counts"]["disable"], 30);
    let (status, again) = admin
        .send(reqwest::Method::POST, &format!("/provisioning/syncs/{run_id}/approve"), None)
        .await;
    assert_eq!(status, 409, "{again}");

    let held = admin.sync().await;
    assert_eq!(held["status"], "held");
    let run_id = held["run_id"].as_str().unwrap();
    let (status, approved) = admin
        .send(reqwest::Method::POST, &format!("/provisioning/syncs/{run_id}/approve"), None)
        .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "approved");
    let applied_by = approved["applied_by"].as_str().unwrap();
    let applying = admin.get(&format!("/provisioning/syncs/{applied_by}")).await;
    assert_eq!(applying["trigger"], "approval");
    assert_eq!(applying["counts"]["disable"], 30);
    let members = admin.members().await;
    assert_eq!(members["user000@example.com"]["status"], "disabled");
    assert_eq!(members["user031@example.com"]["status"], "active");
    assert_eq!(admin.get("/provisioning/pending").await["total"], 0);
}

/// Mapped properties belong to Synchronize; app-owned ones to the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_changes_only_app_owned_properties() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    user(&scim, "ann@example.com", "a", "R&D").await;
    admin.sync().await;
    let member = admin.members().await["ann@example.com"].clone();
    let path = format!("/members/{}", member["member_id"].as_str().unwrap());

    let (status, body) = admin
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"app_properties": {"login_method": "sso"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["app_properties"], json!({"login_method": "sso"}));
    let (status, body) = admin
        .send(reqwest::Method::PATCH, &path, Some(json!({"app_properties": {"department": "x"}})))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("mapped"), "{body}");
    let (status, _) = admin
        .send(reqwest::Method::PATCH, &path, Some(json!({"app_properties": {"shoe_size": 9}})))
        .await;
    assert_eq!(status, 400);

    // A later Synchronize leaves the app-owned value alone.
    patch_user(
        &scim,
        member["source"]["scim_user_id"].as_str().unwrap(),
        json!([{"op": "replace", "path": "title", "value": "Boss"}]),
    )
    .await;
    admin.sync().await;
    let after = admin.get(&path).await;
    assert_eq!(after["properties"]["title"], "Boss");
    assert_eq!(after["app_properties"], json!({"login_method": "sso"}));
    // Another tenant's member is not found.
    server.tenant("globex").await;
    let other = Admin::new(&server, "globex").await;
    let (status, _) = other.send(reqwest::Method::GET, &path, None).await;
    assert_eq!(status, 404);
}

/// The scheduler fires at the tenant's local time, once per day, driven by
/// a controlled clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_run_fires_at_the_configured_local_time() {
    use rollcall::sync::scheduler;
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    admin
        .put(
            "/provisioning/settings",
            json!({"schedule": {"time": "02:30", "time_zone": "Europe/Paris"}}),
        )
        .await;
    scim.create_user("ann@example.com").await;
    let store = server.store.clone();
    let now = jiff::Timestamp::now();
    let settings = admin.get("/provisioning/settings").await;
    let next: jiff::Timestamp = settings["next_run_at"].as_str().unwrap().parse().unwrap();
    let paris = next.to_zoned(jiff::tz::TimeZone::get("Europe/Paris").unwrap());
    assert_eq!((paris.hour(), paris.minute()), (2, 30));
    assert!(next > now);

    let tick = |at: jiff::Timestamp| {
        let store = store.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                scheduler::tick(&store, at, rollcall::sync::RunOptions::default()).unwrap()
            })
            .await
            .unwrap()
        }
    };
    let minute = jiff::SignedDuration::from_mins(1);
    assert_eq!(tick(next - minute).await, 0, "not before its time");
    assert_eq!(tick(next).await, 1);
    assert_eq!(tick(next + jiff::SignedDuration::from_hours(3)).await, 0, "once a day");
    assert_eq!(admin.get("/members").await["total"], 1);
    let runs = admin.get("/provisioning/syncs").await;
    assert_eq!(runs["runs"][0]["trigger"], "scheduled");
    assert_eq!(runs["runs"][0]["actor"], json!({"kind": "scheduler"}));
    assert_eq!(tick(next + jiff::SignedDuration::from_hours(24)).await, 1, "the next day");
}

/// The admin API is for admin tokens only, and the SCIM API not for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_and_admin_tokens_stay_on_their_own_side() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let (_, scim_token) = server.token("acme", TokenScope::Scim).await;
    let refused = server.get("/api/v1/provisioning/pending", Some(&scim_token)).await;
    assert_eq!(refused.status().as_u16(), 401);
    let refused = server.get("/scim/v2/Users", Some(&admin.token)).await;
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(scim.get("/Users").await.status, 200);
    // Bad input is a JSON error and records nothing (all of the admin
    // API's write routes: bad_input_on_the_admin_api_writes_nothing).
    let head = server.log_head();
    let (status, body) = admin
        .send(reqwest::Method::PUT, "/provisioning/mapping", Some(json!({"properties": 3})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().is_some());
    let (status, _) = admin.send(reqwest::Method::GET, "/members?status=gone", None).await;
    assert_eq!(status, 400);
    let (status, _) = admin.send(reqwest::Method::GET, "/members/nope", None).await;
    assert_eq!(status, 404);
    let (status, _) = admin.send(reqwest::Method::GET, "/provisioning/pending?limit=0", None).await;
    assert_eq!(status, 400);
    assert_eq!(server.log_head(), head, "refused requests appended an event");
}

/// Every write route of the admin API refuses bad input with a JSON error
/// that says what is wrong, and appends nothing to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_admin_api_writes_nothing() {
    use reqwest::Method;
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let ann = user(&scim, "ann@example.com", "ext-ann", "R&D").await;
    admin.sync().await;
    let member = admin.members().await["ann@example.com"]["member_id"].as_str().unwrap().to_owned();
    let member_path = format!("/members/{member}");
    let _ = ann;
    let cases: Vec<(Method, &str, Option<Value>, u16)> = vec![
        (Method::PUT, "/provisioning/mapping", Some(json!({"properties": 3})), 400),
        (
            Method::PUT,
            "/provisioning/mapping",
            Some(json!({"properties": [{"property": "x", "source": "name.[givenName"}]})),
            400,
        ),
        (Method::PUT, "/provisioning/mapping", Some(json!({"properties": [], "extra": 1})), 400),
        (Method::PUT, "/provisioning/role-bindings", Some(json!({"roles": "staff"})), 400),
        (
            Method::PUT,
            "/provisioning/role-bindings",
            Some(json!({"roles": ["staff"], "default_role": "boss"})),
            400,
        ),
        (Method::PUT, "/provisioning/settings", Some(json!({"grace_days": -1})), 400),
        (
            Method::PUT,
            "/provisioning/settings",
            Some(json!({"schedule": {"time": "25:00", "time_zone": "UTC"}})),
            400,
        ),
        (
            Method::PUT,
            "/provisioning/settings",
            Some(json!({"schedule": {"time": "+1:00", "time_zone": "UTC"}})),
            400,
        ),
        (Method::GET, "/members?offset=9223372036854775808", None, 400),
        (Method::GET, "/provisioning/syncs?offset=9223372036854775808", None, 400),
        (Method::PATCH, &member_path, Some(json!({"app_properties": 5})), 400),
        (Method::PATCH, "/members/no-such-member", Some(json!({"app_properties": {}})), 404),
        (Method::POST, "/tokens", Some(json!({"scope": "root"})), 400),
        (Method::POST, "/tokens", Some(json!({"scope": "scim", "expires": "forever"})), 400),
        (Method::DELETE, "/tokens/no-such-token", None, 404),
        (Method::POST, "/provisioning/syncs/no-such-run/approve", None, 404),
        (Method::POST, "/provisioning/syncs/no-such-run/reject", None, 404),
    ];
    for (method, path, body, expected) in cases {
        let head = server.log_head();
        let (status, answer) = admin.send(method.clone(), path, body.clone()).await;
        assert_eq!(status, expected, "{method} {path} {body:?}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|message| !message.is_empty()),
            "{method} {path}: {answer}"
        );
        assert_eq!(server.log_head(), head, "{method} {path} {body:?} appended an event");
    }
    // A body that is not JSON at all.
    let head = server.log_head();
    let refused = server
        .client
        .put(server.url("/api/v1/provisioning/mapping"))
        .bearer_auth(&admin.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(body["message"].as_str().is_some(), "{body}");
    assert_eq!(server.log_head(), head);
}

/// Creates users `first..first + count` with Bulk, 1,000 per request.
pub(crate) async fn bulk_users(scim: &Scim<'_>, first: usize, count: usize) {
    let mut index = first;
    while index < first + count {
        let end = (index + 1000).min(first + count);
        let operations: Vec<Value> = (index..end)
            .map(|i| {
                json!({
                    "method": "POST", "path": "/Users", "bulkId": format!("u{i}"),
                    "data": {
                        "schemas": [USER, ENTERPRISE], "userName": format!("user{i:06}@example.com"),
                        "externalId": format!("ext{i}"), "title": format!("T{}", i % 7),
                        ENTERPRISE: {"department": format!("D{}", i % 13)}
                    }
                })
            })
            .collect();
        let answer = scim
            .post(
                "/Bulk",
                json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                    "Operations": operations
                }),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        index = end;
    }
}

/// The CLI twins of the API: preview, run, history, mapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_previews_runs_and_lists_synchronize() {
    use crate::util::{rollcall, rollcall_ok, stdout};
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    bulk_users(&scim, 0, 5).await;
    let db = server.db_path();

    let preview = rollcall_ok(&db, &["sync", "--tenant", "acme", "--preview", "--json"]);
    let preview: Value = serde_json::from_str(&stdout(&preview)).unwrap();
    assert_eq!(preview["counts"]["join"], 5, "{preview}");
    let run = rollcall_ok(&db, &["sync", "--tenant", "acme", "--json"]);
    let run: Value = serde_json::from_str(&stdout(&run)).unwrap();
    assert_eq!(run["trigger"], "cli");
    assert_eq!(run["counts"]["join"], 5);
    assert_eq!(run["actor"]["kind"], "cli");
    let history = rollcall_ok(&db, &["sync", "history", "--tenant", "acme", "--json"]);
    let history: Value = serde_json::from_str(&stdout(&history)).unwrap();
    assert_eq!(history[0]["run_id"], run["run_id"]);

    let file = server.dir.path().join("roles.json");
    std::fs::write(&file, r#"{"roles": ["staff"], "default_role": "staff"}"#).unwrap();
    rollcall_ok(&db, &["roles", "set", "--tenant", "acme", "--file", file.to_str().unwrap()]);
    let shown: Value =
        serde_json::from_str(&stdout(&rollcall_ok(&db, &["roles", "show", "--tenant", "acme"])))
            .unwrap();
    assert_eq!(shown["default_role"], "staff");
    std::fs::write(&file, r#"{"roles": ["staff"], "default_role": "boss"}"#).unwrap();
    let refused =
        rollcall(&db, &["roles", "set", "--tenant", "acme", "--file", file.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(crate::util::stderr(&refused).contains("default_role"));
    let rerun = rollcall_ok(&db, &["sync", "--tenant", "acme", "--json"]);
    let rerun: Value = serde_json::from_str(&stdout(&rerun)).unwrap();
    assert_eq!(rerun["counts"]["role_change"], 5, "{rerun}");
    let mapping = rollcall_ok(&db, &["mapping", "show", "--tenant", "acme"]);
    assert!(stdout(&mapping).contains("name.givenName"));
}

/// A run killed (SIGKILL) in the middle of 50,000 joins resumes where it
/// stopped: every member exists exactly once, with its properties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_and_every_member_exists_once() {
    const USERS: usize = 50_000;
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    bulk_users(&scim, 0, USERS).await;
    let tenant = scim_tenant(&server).await;

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["sync", "--tenant", "acme"])
        .env("ROLLCALL_DB", server.db_path())
        .env("ROLLCALL_DURABILITY", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Once a few batches are in, freeze the process (SIGSTOP) before it
    // is killed: what it had committed is then fixed, so the kill lands
    // mid-run for certain. (Holding SQLite's write lock instead does not
    // work: the busy handler is unfair, and the run's writer, committing
    // batch after batch, keeps the lock until it is done.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while member_count(&server, &tenant) < 2000 {
        assert!(std::time::Instant::now() < deadline, "the run never got going");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let frozen = member_count(&server, &tenant);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(member_count(&server, &tenant), frozen, "nothing committed after the freeze");
    let after_kill = member_count(&server, &tenant);
    assert!((2000..USERS as u64).contains(&after_kill), "killed at {after_kill}");
    let killed = runs_of(&server, &tenant);
    assert_eq!(killed.len(), 1, "{killed:?}");
    assert_eq!(killed[0].1, "running", "the killed run is unfinished: {killed:?}");

    crate::util::rollcall_ok(&server.db_path(), &["sync", "--tenant", "acme"]);
    let tenant_id = tenant.clone();
    let (members, distinct) = server
        .store
        .read(move |connection| {
            let count = |sql: &str| -> u64 {
                connection.query_row(sql, [&tenant_id], |row| row.get::<_, i64>(0)).unwrap() as u64
            };
            Ok((
                count("SELECT count(*) FROM members WHERE tenant_id = ?1"),
                count("SELECT count(DISTINCT user_id) FROM members WHERE tenant_id = ?1"),
            ))
        })
        .unwrap();
    assert_eq!((members, distinct), (USERS as u64, USERS as u64));
    // The killed run was resumed and completed, not started over: it is the
    // only run, and the one that completed.
    let runs = runs_of(&server, &tenant);
    assert_eq!(runs, vec![(killed[0].0.clone(), "completed".to_owned())]);
    let admin = Admin::new(&server, "acme").await;
    let some = admin.get("/members?search=user049999@").await;
    assert_eq!(some["members"][0]["properties"]["department"], format!("D{}", 49_999 % 13));
    assert_eq!(admin.get("/provisioning/pending").await["total"], 0);
}

async fn scim_tenant(server: &TestServer) -> String {
    let tenants = server
        .store
        .read(|connection| Ok(projections::tenancy::list_tenants(connection)?))
        .unwrap();
    tenants.into_iter().find(|tenant| tenant.name == "acme").unwrap().tenant_id
}

/// Every run of the tenant as (run id, status), oldest first.
fn runs_of(server: &TestServer, tenant: &str) -> Vec<(String, String)> {
    let tenant = tenant.to_owned();
    server
        .store
        .read(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT run_id, status FROM sync_runs WHERE tenant_id = ?1 ORDER BY run_id",
                )
                .unwrap();
            let rows = statement
                .query_map([&tenant], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            Ok(rows)
        })
        .unwrap()
}

fn member_count(server: &TestServer, tenant: &str) -> u64 {
    let tenant = tenant.to_owned();
    server
        .store
        .read(move |connection| {
            Ok(connection
                .query_row("SELECT count(*) FROM members WHERE tenant_id = ?1", [&tenant], |row| {
                    row.get::<_, i64>(0)
                })
                .unwrap() as u64)
        })
        .unwrap()
}

/// After the grace a leaver is purged (personal values gone, the log
/// keeps its events); a late change to the deleted user resurrects
/// nothing; a re-create after the purge is a new member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leavers_are_purged_after_the_grace_and_never_resurrected() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let ann = user(&scim, "ann@example.com", "ext-ann", "R&D").await;
    let ben = user(&scim, "ben@example.com", "ext-ben", "R&D").await;
    admin.sync().await;
    let first = admin.members().await["ann@example.com"]["member_id"].as_str().unwrap().to_owned();

    // Ben leaves with the default 30-day grace; a late PATCH is refused and
    // the next run finds nothing to do.
    assert_eq!(scim.delete(&format!("/Users/{ben}")).await.status, 204);
    admin.sync().await;
    let late = scim
        .send(
            reqwest::Method::PATCH,
            &format!("/Users/{ben}"),
            Some(json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": true}]})),
        )
        .await;
    assert_eq!(late.status, 404);
    assert_eq!(admin.get("/provisioning/pending").await["total"], 0);
    assert_eq!(admin.members().await["ben@example.com"]["status"], "left");

    // With no grace, Ann is purged as her leave is applied.
    admin.put("/provisioning/settings", json!({"grace_days": 0, "schedule": null})).await;
    assert_eq!(scim.delete(&format!("/Users/{ann}")).await.status, 204);
    let run = admin.sync().await;
    assert_eq!(run["counts"], counts(&[("leave", 1), ("purge", 1)]), "{run}");
    let purged = admin.get(&format!("/members/{first}")).await;
    assert_eq!(purged["status"], "purged");
    assert_eq!(purged["properties"], json!({}));
    assert_eq!(purged["user_name"], "");
    assert!(purged["left_at"].as_str().is_some());

    // Re-created after the purge: a new member, not the old one.
    user(&scim, "ann@example.com", "ext-ann", "R&D").await;
    admin.sync().await;
    let again = admin.members().await["ann@example.com"].clone();
    assert_ne!(again["member_id"], first.as_str());
    assert_eq!(again["status"], "active");
}

/// Entra deletes a user and creates it again (same externalId, new id)
/// before the next Synchronize: one run applies both, and the member is
/// restored, not duplicated, wherever the two fall in the run's batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_and_re_create_in_one_run_restores_the_member() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let mut old = Vec::new();
    for index in 0..5 {
        old.push(
            user(&scim, &format!("u{index}@example.com"), &format!("ext{index}"), "R&D").await,
        );
    }
    admin.sync().await;
    let before = admin.members().await;
    for (index, id) in old.iter().enumerate() {
        assert_eq!(scim.delete(&format!("/Users/{id}")).await.status, 204);
        user(&scim, &format!("u{index}@example.com"), &format!("ext{index}"), "Ops").await;
    }
    let run = admin.sync().await;
    assert_eq!(run["counts"]["restore"], 5, "{run}");
    assert_eq!(run["counts"]["join"], 0, "{run}");
    let after = admin.members().await;
    assert_eq!(after.len(), 5);
    for (name, member) in &after {
        assert_eq!(member["member_id"], before[name]["member_id"]);
        assert_eq!(member["status"], "active");
        assert_eq!(member["properties"]["department"], "Ops");
    }
}

/// Taking a nested group out of a bound group takes its role away from
/// the users under it at the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_nested_group_revokes_the_roles_it_granted() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    admin
        .put(
            "/provisioning/role-bindings",
            json!({"roles": ["admin", "viewer"], "default_role": "viewer",
                   "bindings": [{"group": "Admins", "role": "admin"}]}),
        )
        .await;
    let alice = user(&scim, "alice@example.com", "a", "R&D").await;
    let leads = group(&scim, "Leads", &[&alice]).await;
    let admins = group(&scim, "Admins", &[]).await;
    let answer = scim
        .send(
            reqwest::Method::PATCH,
            &format!("/Groups/{admins}"),
            Some(json!({"schemas": [PATCH], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": leads}]}]})),
        )
        .await;
    assert!(answer.status == 200 || answer.status == 204, "{}", answer.body);
    admin.sync().await;
    assert_eq!(admin.members().await["alice@example.com"]["roles"], json!(["admin"]));

    let answer = scim
        .send(
            reqwest::Method::PATCH,
            &format!("/Groups/{admins}"),
            Some(json!({"schemas": [PATCH], "Operations": [
                {"op": "remove", "path": format!("members[value eq \"{leads}\"]")}]})),
        )
        .await;
    assert!(answer.status == 200 || answer.status == 204, "{}", answer.body);
    let run = admin.sync().await;
    assert_eq!(run["counts"]["role_change"], 1, "{run}");
    assert_eq!(admin.members().await["alice@example.com"]["roles"], json!(["viewer"]));
}

/// A run resumed after a crash applies the range it started with: a change
/// the IdP made after it is left pending, never skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_keeps_its_range_and_later_changes_stay_pending() {
    use events::event::{Event, SyncBatchApplied, SyncStarted};
    use events::{Actor, CommandContext, ExpectedVersion};
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let first = user(&scim, "a@example.com", "a", "R&D").await;
    admin.sync().await;
    let later = [
        user(&scim, "b@example.com", "b", "R&D").await,
        user(&scim, "c@example.com", "c", "R&D").await,
    ];
    assert!(later.iter().all(|id| id.as_str() > first.as_str()));

    // A run that started, applied a batch ending at `first`, and died.
    let tenant = scim_tenant(&server).await;
    let head = server.store.log().head().unwrap();
    let checkpoint = admin.get("/provisioning/pending").await["checkpoint"].as_u64().unwrap();
    let stream = "sync:01KCRASHEDRUN0000000000000".to_owned();
    let events = vec![
        Event::SyncStarted(SyncStarted {
            run_id: "01KCRASHEDRUN0000000000000".to_owned(),
            trigger: events::event::RunTrigger::Cli,
            from_position: checkpoint,
            to_position: head,
            held_reason: None,
            scheduled_for: None,
            approves: None,
        }),
        Event::SyncBatchApplied(SyncBatchApplied {
            run_id: "01KCRASHEDRUN0000000000000".to_owned(),
            through_user: first.clone(),
            counts: json!({}),
        }),
    ];
    server
        .store
        .command(None, move |tx| {
            rollcall::store::record(
                tx,
                &tenant,
                &stream,
                ExpectedVersion::NoStream,
                &events,
                &CommandContext::new(Actor::System),
            )
            .map(drop)
        })
        .await
        .unwrap();
    // After the crash, the IdP changes the user before the cursor.
    patch_user(&scim, &first, json!([{"op": "replace", "path": "title", "value": "Boss"}])).await;

    let resumed = admin.sync().await;
    assert_eq!(resumed["run_id"], "01KCRASHEDRUN0000000000000", "{resumed}");
    assert_eq!(resumed["to_position"], head);
    assert_eq!(resumed["counts"]["join"], 2);
    let preview = admin.get("/provisioning/pending").await;
    assert_eq!(preview["counts"], counts(&[("update", 1)]), "{preview}");
    admin.sync().await;
    assert_eq!(admin.members().await["a@example.com"]["properties"]["title"], "Boss");
}

/// An approval applies what the admin reviewed: only the latest held run
/// can be approved, and disables that came after it are held again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_lifts_only_the_hold_it_reviewed() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let ids = members_then_deactivated(&scim, &admin, 100, 30).await;
    let first = admin.sync().await;
    let second = admin.sync().await;
    assert_eq!((first["status"].as_str(), second["status"].as_str()), (Some("held"), Some("held")));
    let (status, body) = admin
        .send(
            reqwest::Method::POST,
            &format!("/provisioning/syncs/{}/approve", first["run_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // 25 more deactivations arrive before the admin approves the 30.
    for id in &ids[30..55] {
        patch_user(&scim, id, json!([{"op": "replace", "path": "active", "value": false}])).await;
    }
    let (status, approved) = admin
        .send(
            reqwest::Method::POST,
            &format!("/provisioning/syncs/{}/approve", second["run_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{approved}");
    let applying = admin
        .get(&format!("/provisioning/syncs/{}", approved["applied_by"].as_str().unwrap()))
        .await;
    assert_eq!(applying["counts"]["disable"], 30, "{applying}");
    assert_eq!(applying["counts"]["held"], 25, "{applying}");
    assert_eq!(applying["status"], "held");
    let members = admin.members().await;
    assert_eq!(members["user029@example.com"]["status"], "disabled");
    assert_eq!(members["user030@example.com"]["status"], "active");
}

/// With no grace, a delete and re-create in one run is a new member: the
/// old one's grace was over before the re-create was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_grace_a_re_created_user_is_a_new_member() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    admin.put("/provisioning/settings", json!({"grace_days": 0, "schedule": null})).await;
    let old = user(&scim, "ann@example.com", "ext-ann", "R&D").await;
    admin.sync().await;
    let before = admin.members().await["ann@example.com"]["member_id"].as_str().unwrap().to_owned();
    assert_eq!(scim.delete(&format!("/Users/{old}")).await.status, 204);
    user(&scim, "ann@example.com", "ext-ann", "Ops").await;
    let run = admin.sync().await;
    assert_eq!(run["counts"], counts(&[("join", 1), ("leave", 1), ("purge", 1)]), "{run}");
    let after = admin.members().await["ann@example.com"].clone();
    assert_ne!(after["member_id"], before.as_str());
    assert_eq!(admin.get(&format!("/members/{before}")).await["status"], "purged");
}

/// A cleared externalId reaches the member, and a rerun finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleared_external_id_is_cleared_on_the_member() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let ann = user(&scim, "ann@example.com", "ext-ann", "R&D").await;
    admin.sync().await;
    patch_user(&scim, &ann, json!([{"op": "remove", "path": "externalId"}])).await;
    let run = admin.sync().await;
    assert_eq!(run["counts"]["update"], 1, "{run}");
    assert_eq!(admin.members().await["ann@example.com"]["source"]["external_id"], Value::Null);
    assert_eq!(admin.get("/provisioning/pending").await["total"], 0);
    // Another tenant cannot see the run or the member.
    server.tenant("globex").await;
    let other = Admin::new(&server, "globex").await;
    let run_id = run["run_id"].as_str().unwrap();
    let (status, _) =
        other.send(reqwest::Method::GET, &format!("/provisioning/syncs/{run_id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = other
        .send(reqwest::Method::POST, &format!("/provisioning/syncs/{run_id}/approve"), None)
        .await;
    assert_eq!(status, 404);
}

/// Mappings that would reject every user are refused when they are set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappings_that_cannot_work_are_refused() {
    let server = TestServer::start().await;
    let _scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    for (rule, needle) in [
        (
            json!({"property": "t", "source": "userType", "allowed": ["A"], "default": "B"}),
            "allowed",
        ),
        (json!({"property": "n", "source": "name"}), "complex"),
        (json!({"property": "e", "source": "emails[type eq \"work\"]"}), "complex"),
        (json!({"property": "e", "source": "emails[type eq"}), "path"),
        (json!({"property": "x", "source": "title", "type": "list", "split": ""}), "split"),
        (json!({"property": "bad name!", "source": "title"}), "property"),
    ] {
        let (status, body) = admin
            .send(
                reqwest::Method::PUT,
                "/provisioning/mapping",
                Some(json!({"properties": [rule]})),
            )
            .await;
        assert_eq!(status, 400, "{rule}: {body}");
        assert!(body["message"].as_str().unwrap().contains(needle), "{rule}: {body}");
    }
    // A list may take a complex attribute whole (its values).
    let (status, body) = admin
        .send(
            reqwest::Method::PUT,
            "/provisioning/mapping",
            Some(
                json!({"properties": [{"property": "emails", "source": "emails", "type": "list"}]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// `total` users synchronized into members, then the first `deactivated`
/// of them deactivated in the IdP (not yet synchronized); their ids.
async fn members_then_deactivated(
    scim: &Scim<'_>,
    admin: &Admin<'_>,
    total: usize,
    deactivated: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for index in 0..total {
        let created = scim.create_user(&format!("user{index:03}@example.com")).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    admin.sync().await;
    for id in &ids[..deactivated] {
        patch_user(scim, id, json!([{"op": "replace", "path": "active", "value": false}])).await;
    }
    ids
}

/// The CLI's side of the safeguard: a held run exits with status 3 (scripts
/// notice it), `sync reject` leaves the members and the changes pending,
/// `sync approve` applies exactly what was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_holds_rejects_and_approves() {
    use crate::util::{rollcall, rollcall_ok, stdout};
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    members_then_deactivated(&scim, &admin, 40, 20).await;
    let db = server.db_path();

    let held = rollcall(&db, &["sync", "--tenant", "acme", "--json"]);
    assert_eq!(held.status.code(), Some(3), "a held run exits 3");
    let held: Value = serde_json::from_str(&stdout(&held)).unwrap();
    assert_eq!(held["status"], "held", "{held}");
    assert_eq!(held["counts"]["held"], 20);
    let run_id = held["run_id"].as_str().unwrap().to_owned();

    let head = server.log_head();
    let rejected = rollcall_ok(&db, &["sync", "reject", &run_id, "--tenant", "acme"]);
    assert!(stdout(&rejected).contains("rejected"), "{}", stdout(&rejected));
    assert!(server.log_head() > head, "the rejection is recorded");
    let members = admin.members().await;
    assert_eq!(members["user000@example.com"]["status"], "active", "nothing was disabled");
    assert_eq!(admin.get("/provisioning/pending").await["counts"]["disable"], 20);
    let again = rollcall(&db, &["sync", "approve", &run_id, "--tenant", "acme"]);
    assert!(!again.status.success(), "a rejected run cannot be approved after");

    let held = rollcall(&db, &["sync", "--tenant", "acme", "--json"]);
    assert_eq!(held.status.code(), Some(3));
    let held: Value = serde_json::from_str(&stdout(&held)).unwrap();
    let approved = rollcall_ok(
        &db,
        &["sync", "approve", held["run_id"].as_str().unwrap(), "--tenant", "acme"],
    );
    let said = stdout(&approved);
    assert!(said.contains("approved") && said.contains("applied by:"), "{said}");
    assert!(said.contains("trigger approval") && said.contains("disable 20"), "{said}");
    let members = admin.members().await;
    let disabled = members.values().filter(|member| member["status"] == "disabled").count();
    assert_eq!(disabled, 20);
    assert_eq!(admin.get("/provisioning/pending").await["total"], 0);
    let unknown = rollcall(&db, &["sync", "approve", "no-such-run", "--tenant", "acme"]);
    assert!(!unknown.status.success());
}

/// A database made before `sync_runs` gained its later columns opens, gets
/// them, and synchronizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_an_earlier_build_gains_the_new_columns() {
    if crate::util::sqlite_only("an older build's SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let opened = path.clone();
    tokio::task::spawn_blocking(move || {
        let store = rollcall::store::Store::open(&opened, crate::util::test_log_options()).unwrap();
        store.shutdown();
        drop(store);
        let connection = rusqlite::Connection::open(&opened).unwrap();
        connection
            .execute_batch(
                "ALTER TABLE sync_runs DROP COLUMN approves; \
                 ALTER TABLE sync_runs DROP COLUMN scheduled_for;",
            )
            .unwrap();
        drop(connection);
        let store = rollcall::store::Store::open(&opened, crate::util::test_log_options()).unwrap();
        let tenant = rollcall::tenancy::create_tenant(
            &store,
            "acme",
            events::CommandContext::new(events::Actor::System),
        )
        .wait()
        .unwrap();
        let run = rollcall::sync::run(
            &store,
            &tenant.tenant_id,
            rollcall::sync::Trigger::Cli,
            events::CommandContext::new(events::Actor::System),
            rollcall::sync::RunOptions::default(),
        )
        .unwrap();
        assert_eq!(run.status, projections::members::RunStatus::Completed);
        store.shutdown();
    })
    .await
    .unwrap();
}

/// The member list's filters: a search finds a member by any of its values
/// (userName, externalId, a property), folding case beyond ASCII; a role
/// filter matches the role exactly, not a role it is the start of; pages
/// hold their place in name order and the total counts every match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_found_by_any_value_and_filtered_by_exact_role() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    admin
        .put(
            "/provisioning/role-bindings",
            json!({
                "roles": ["edit", "editor", "viewer"],
                "default_role": "viewer",
                "bindings": [{"group": "Writers", "role": "editor"}, {"group": "Proof", "role": "edit"}]
            }),
        )
        .await;
    let elodie = user(&scim, "Élodie.Durand@example.com", "ext-ÉD-7", "Ventes").await;
    let bruno = user(&scim, "bruno@example.com", "ext-bruno", "Sales").await;
    let mut others = Vec::new();
    for index in 0..7 {
        others.push(
            user(&scim, &format!("z{index}@example.com"), &format!("ext-z{index}"), "Ops").await,
        );
    }
    group(&scim, "Writers", &[&elodie, &others[0], &others[1]]).await;
    group(&scim, "Proof", &[&bruno]).await;
    admin.sync().await;

    let names = |body: &Value| -> Vec<String> {
        body["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|member| member["user_name"].as_str().unwrap().to_owned())
            .collect()
    };
    let found = admin.get("/members?search=%C3%A9LODIE").await;
    assert_eq!(
        (found["total"].clone(), names(&found)),
        (json!(1), vec!["Élodie.Durand@example.com".to_owned()])
    );
    let found = admin.get("/members?search=ext-%C3%A9d-7").await;
    assert_eq!(names(&found), ["Élodie.Durand@example.com"], "by externalId");
    let found = admin.get("/members?search=sALES").await;
    assert_eq!(names(&found), ["bruno@example.com"], "by a property");
    assert_eq!(admin.get("/members?search=nobody").await["total"], 0);
    // A search never matches across two values (userName, then externalId).
    assert_eq!(admin.get("/members?search=example.com%0Aext").await["total"], 0);

    let edit = admin.get("/members?role=edit").await;
    assert_eq!(names(&edit), ["bruno@example.com"]);
    let editors = admin.get("/members?role=editor").await;
    assert_eq!(editors["total"], 3);
    assert_eq!(admin.get("/members?role=ed").await["total"], 0);
    assert_eq!(admin.get("/members?role=%22editor%22").await["total"], 0);

    // Pages of a filtered list: the total is every match, pages in order.
    let first = admin.get("/members?search=example.com&limit=4").await;
    let second = admin.get("/members?search=example.com&limit=4&offset=4").await;
    let last = admin.get("/members?search=example.com&limit=4&offset=8").await;
    assert_eq!((first["total"].clone(), last["total"].clone()), (json!(9), json!(9)));
    let paged: Vec<String> = [names(&first), names(&second), names(&last)].concat();
    let mut expected: Vec<String> = admin.members().await.keys().cloned().collect();
    expected.sort_by_key(|name| name.to_lowercase());
    assert_eq!(paged, expected);
    let viewers_past_end = admin.get("/members?role=viewer&status=active&offset=50").await;
    assert_eq!((viewers_past_end["total"].clone(), names(&viewers_past_end).len()), (json!(5), 0));
}

/// A file made before members had a search text and the `members_list`
/// index opens, gets both, and its members are found by search again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_an_earlier_build_gains_the_member_search() {
    if crate::util::sqlite_only("an older build's SQLite file") {
        return;
    }
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    user(&scim, "ana@example.com", "ext-ana", "Finance").await;
    user(&scim, "ben@example.com", "ext-ben", "Legal").await;
    admin.sync().await;
    let server = server
        .reopen_after(|path| {
            let connection = rusqlite::Connection::open(path).unwrap();
            connection
                .execute_batch(
                    "DROP INDEX members_list; \
                     ALTER TABLE members DROP COLUMN search_text; \
                     CREATE INDEX members_by_name ON members \
                         (tenant_id, user_name COLLATE NOCASE, member_id);",
                )
                .unwrap();
        })
        .await;
    let admin = Admin::new(&server, "acme").await;
    let found = admin.get("/members?search=legal").await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["members"][0]["user_name"], "ben@example.com");
    let indexes: Vec<String> = server
        .store
        .read(|connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'members' \
                     ORDER BY name",
                )
                .unwrap();
            let names = statement.query_map([], |row| row.get(0)).unwrap();
            Ok(names.collect::<Result<Vec<String>, _>>().unwrap())
        })
        .unwrap();
    assert!(indexes.contains(&"members_list".to_owned()), "{indexes:?}");
    assert!(!indexes.contains(&"members_by_name".to_owned()), "{indexes:?}");
}

/// A platform's rule: "First Name, Last Name, Email; the email must be
/// unique per user". `required` and `unique` reject, with the reason, in
/// the preview and the run, and the users stay pending until fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_and_unique_properties_reject_until_the_idp_fixes_them() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let admin = Admin::new(&server, "acme").await;
    let mut mapping = admin.get("/provisioning/mapping").await;
    for rule in mapping["properties"].as_array_mut().unwrap() {
        if rule["property"] == "email" {
            rule["required"] = json!(true);
            rule["unique"] = json!(true);
        }
    }
    admin.put("/provisioning/mapping", mapping.clone()).await;
    let shown = admin.get("/provisioning/mapping").await;
    assert_eq!(shown, mapping, "the rules read back as set");

    let create = |name: &str, email: Option<&str>| {
        let mut body = json!({"schemas": [USER], "userName": name});
        if let Some(email) = email {
            body["emails"] = json!([{"value": email, "primary": true}]);
        }
        body
    };
    assert_eq!(scim.post("/Users", create("ann", Some("ann@example.com"))).await.status, 201);
    let bob = scim.post("/Users", create("bob", None)).await;
    let carol = scim.post("/Users", create("carol", Some("ANN@example.com"))).await;
    assert_eq!((bob.status, carol.status), (201, 201));

    let preview = admin.get("/provisioning/pending").await;
    assert_eq!(preview["counts"], counts(&[("join", 1), ("rejected", 2)]), "{preview}");
    let reason = |name: &str| {
        preview["items"].as_array().unwrap().iter().find(|item| item["user_name"] == name).unwrap()
            ["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(reason("bob").contains("required"), "{}", reason("bob"));
    assert!(reason("carol").contains("must be unique"), "{}", reason("carol"));
    let run = admin.sync().await;
    assert_eq!(run["counts"], counts(&[("join", 1), ("rejected", 2)]));
    assert_eq!(admin.members().await.len(), 1);

    // Fixed in the IdP: both join at the next run.
    let carol_id = carol.body["id"].as_str().unwrap();
    let fix = json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "emails", "value": [{"value": "carol@example.com", "primary": true}]}]});
    assert_eq!(
        scim.send(reqwest::Method::PATCH, &format!("/Users/{carol_id}"), Some(fix.clone()))
            .await
            .status,
        200
    );
    let bob_id = bob.body["id"].as_str().unwrap();
    let fix_bob = json!({"schemas": [PATCH], "Operations": [
        {"op": "add", "path": "emails", "value": [{"value": "bob@example.com", "primary": true}]}]});
    assert_eq!(
        scim.send(reqwest::Method::PATCH, &format!("/Users/{bob_id}"), Some(fix_bob)).await.status,
        200
    );
    let run = admin.sync().await;
    assert_eq!(run["counts"], counts(&[("join", 2)]), "{run}");
    assert_eq!(admin.members().await.len(), 3);

    // A list cannot be unique.
    mapping["properties"].as_array_mut().unwrap().push(json!({
        "property": "tags", "source": "emails.value", "type": "list", "unique": true}));
    let (status, body) =
        admin.send(reqwest::Method::PUT, "/provisioning/mapping", Some(mapping)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("cannot be unique"));
}
