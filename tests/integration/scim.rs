//! The SCIM endpoint against a real server: every resource operation and
//! error case, asserting statuses, headers and bodies, and what the log
//! recorded.

use events::VerifyScope;
use events::event::TokenScope;
use serde_json::{Value, json};

use crate::util::TestServer;

pub(crate) const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub(crate) const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// A SCIM client for one tenant's token.
pub(crate) struct Scim<'a> {
    pub server: &'a TestServer,
    pub token: String,
}

pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Scim<'_> {
    pub(crate) async fn new<'s>(server: &'s TestServer, tenant: &str) -> Scim<'s> {
        server.tenant(tenant).await;
        let (_, token) = server.token(tenant, TokenScope::Scim).await;
        Scim { server, token }
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .server
            .client
            .request(method, self.server.url(&format!("/scim/v2{path}")))
            .bearer_auth(&self.token)
            .header("user-agent", "Azure Active Directory SCIM Client")
            .header("x-request-id", "req-under-test");
        if let Some(body) = body {
            request =
                request.header("content-type", "application/scim+json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        if !body.is_null() {
            assert_eq!(headers["content-type"], "application/scim+json", "{path}");
        }
        Answer { status, headers, body }
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Answer {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Answer {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    pub(crate) async fn create_user(&self, user_name: &str) -> Value {
        let answer = self.post("/Users", json!({"schemas": [USER], "userName": user_name})).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        answer.body
    }
}

pub(crate) fn assert_error(answer: &Answer, status: u16, scim_type: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["schemas"], json!([ERROR]));
    assert_eq!(answer.body["status"], status.to_string());
    assert_eq!(answer.body.get("scimType").and_then(Value::as_str), scim_type, "{}", answer.body);
    assert!(answer.body["detail"].as_str().is_some_and(|detail| !detail.is_empty()));
}

/// A resource body without what the server chose (id, meta times).
fn without_server_fields(mut body: Value) -> Value {
    if let Some(fields) = body.as_object_mut() {
        fields.remove("id");
        fields.remove("meta");
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_round_trips_with_canonical_names_and_extensions() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let created = scim
        .post(
            "/Users",
            json!({
                "schemas": [USER, ENTERPRISE],
                "USERNAME": "bjensen@example.com", "externalId": "00u1", "id": "ignored", "active": "True",
                "name": {"givenName": "Barbara", "FAMILYNAME": "Jensen"},
                "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
                ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "boss"}},
                "urn:ietf:params:scim:schemas:extension:2.0:Metadata": {"costCenter": "CC-42"},
                "password": "hunter2"
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "ignored");
    let location = format!("{}/scim/v2/Users/{id}", server.base);
    assert_eq!(created.headers["location"], location.as_str());
    assert_eq!(created.headers["etag"], "W/\"1\"");
    assert_eq!(created.body["meta"]["version"], "W/\"1\"");
    assert_eq!(created.body["meta"]["location"], location);
    assert_eq!(created.body["meta"]["resourceType"], "User");
    assert_eq!(
        without_server_fields(created.body.clone()),
        json!({
            "schemas": [USER, ENTERPRISE, "urn:ietf:params:scim:schemas:extension:2.0:Metadata"],
            "userName": "bjensen@example.com", "externalId": "00u1", "active": true,
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
            ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "boss"}},
            "urn:ietf:params:scim:schemas:extension:2.0:Metadata": {"costCenter": "CC-42"}
        }),
        "no password is ever returned"
    );
    let fetched = scim.get(&format!("/Users/{id}")).await;
    assert_eq!((fetched.status, fetched.body.clone()), (200, created.body.clone()));
    assert_eq!(fetched.headers["etag"], "W/\"1\"");

    let trimmed = scim.get(&format!("/Users/{id}?attributes=userName,name.givenName")).await;
    assert_eq!(
        trimmed.body,
        json!({"schemas": created.body["schemas"], "id": id, "userName": "bjensen@example.com", "name": {"givenName": "Barbara"}})
    );
    let excluded = scim.get(&format!("/Users/{id}?excludedAttributes=emails,{ENTERPRISE}")).await;
    assert!(excluded.body.get("emails").is_none() && excluded.body.get(ENTERPRISE).is_none());
    assert_eq!(excluded.body["userName"], "bjensen@example.com");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_replaces_every_writable_attribute_and_keeps_id_and_created() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let created = scim
        .post(
            "/Users",
            json!({"userName": "bjensen", "title": "Guide", "name": {"givenName": "Barbara"}}),
        )
        .await
        .body;
    let id = created["id"].as_str().unwrap();
    let replaced = scim
        .put(
            &format!("/Users/{id}"),
            json!({"userName": "bjensen", "displayName": "Babs", "active": false}),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(replaced.body["id"], id);
    assert_eq!(replaced.body["meta"]["created"], created["meta"]["created"]);
    assert_eq!(replaced.headers["etag"], "W/\"3\"", "UserUpdated and UserDeactivated");
    assert_eq!(
        without_server_fields(replaced.body.clone()),
        json!({"schemas": [USER], "userName": "bjensen", "displayName": "Babs", "active": false}),
        "title and name were cleared"
    );
    // The same PUT again changes nothing and records nothing.
    let again = scim
        .put(
            &format!("/Users/{id}"),
            json!({"userName": "bjensen", "displayName": "Babs", "active": false}),
        )
        .await;
    assert_eq!(again.headers["etag"], "W/\"3\"");

    let log = server.store.log();
    let stream: Vec<String> = log
        .read_stream(&tenant_id(&server, "acme").await, &format!("user:{id}"))
        .unwrap()
        .iter()
        .map(|event| event.event_type.clone())
        .collect();
    assert_eq!(stream, vec!["UserCreated", "UserUpdated", "UserDeactivated"]);
    server.stop().await.unwrap();
}

pub(crate) async fn tenant_id(server: &TestServer, name: &str) -> String {
    server
        .store
        .read(|connection| Ok(projections::tenancy::tenant_by_name(connection, name)?))
        .unwrap()
        .unwrap()
        .tenant_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_record_business_events_with_who_and_how() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let id = scim.create_user("bjensen").await["id"].as_str().unwrap().to_owned();
    let tenant = tenant_id(&server, "acme").await;
    let events = server.store.log().read_stream(&tenant, &format!("user:{id}")).unwrap();
    let metadata = events[0].metadata_opened(server.store.keys()).unwrap();
    assert!(matches!(metadata.actor, events::Actor::Token { .. }));
    assert_eq!(metadata.request_id.as_deref(), Some("req-under-test"));
    assert_eq!(metadata.user_agent.as_deref(), Some("Azure Active Directory SCIM Client"));
    // The request as the IdP sent it, before normalisation, for auditors.
    assert_eq!(
        metadata.request,
        Some(events::RequestRecord {
            method: "POST".to_owned(),
            target: "/scim/v2/Users".to_owned(),
            body: Some(json!({"schemas": [USER], "userName": "bjensen"})),
        })
    );
    // A PUT that carries a password records it redacted.
    scim.put(
        &format!("/Users/{id}"),
        json!({"userName": "bjensen", "password": "s3cret", "title": "x"}),
    )
    .await;
    let events = server.store.log().read_stream(&tenant, &format!("user:{id}")).unwrap();
    let last = &events[events.len() - 1];
    assert_eq!(last.event_type, "UserUpdated");
    assert!(!last.payload.contains("s3cret"), "{}", last.payload);
    // Stored sealed (the document and the change are personal): opened,
    // the change holds the password redacted.
    let opened = last.payload_opened(server.store.keys()).unwrap().to_string();
    assert!(!opened.contains("s3cret"), "{opened}");
    assert!(opened.contains("<redacted>"), "{opened}");
    let request = last.metadata_opened(server.store.keys()).unwrap().request.unwrap();
    assert_eq!((request.method.as_str(), request.target), ("PUT", format!("/scim/v2/Users/{id}")));
    assert_eq!(
        request.body,
        Some(json!({"userName": "bjensen", "password": "<redacted>", "title": "x"}))
    );
    // However it is named, a password is neither stored nor echoed nor
    // recorded in clear (review finding: URN-qualified and padded names).
    let sneaky = scim
        .post("/Users", json!({"userName": "sneaky", "urn:ietf:params:scim:schemas:core:2.0:User:password": "hunter2"}))
        .await;
    assert_eq!(sneaky.status, 201);
    assert!(!sneaky.body.to_string().contains("hunter2"), "{}", sneaky.body);
    let sneaky_id = sneaky.body["id"].as_str().unwrap().to_owned();
    let patched = scim
        .patch(
            &format!("/Users/{sneaky_id}"),
            json!([{"op": "replace", "path": "password ", "value": "hunter2"}, {"op": "replace", "path": "title", "value": "x"}]),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    // Review finding: a password under a dotted custom path, or a dotted
    // key in a path-less value, reached the log.
    let dotted = scim
        .patch(
            &format!("/Users/{sneaky_id}"),
            json!([
                {"op": "add", "path": "urn:example:custom:credentials.password", "value": "hunter2"},
                {"op": "add", "value": {"credentials.password": "hunter2", "title": "z"}}
            ]),
        )
        .await;
    assert_eq!(dotted.status, 200, "{}", dotted.body);
    assert!(!dotted.body.to_string().contains("hunter2"), "{}", dotted.body);
    for event in server.store.log().read_stream(&tenant, &format!("user:{sneaky_id}")).unwrap() {
        assert!(!event.payload.contains("hunter2"), "{}: {}", event.event_type, event.payload);
        assert!(!event.metadata.contains("hunter2"), "{}: {}", event.event_type, event.metadata);
        let metadata = event.metadata_opened(server.store.keys()).unwrap();
        let body = metadata.request.unwrap().body.unwrap().to_string();
        assert!(!body.contains("hunter2"), "{}: {body}", event.event_type);
        assert!(body.contains("<redacted>"), "{}: {body}", event.event_type);
    }
    // A request that appends several events records its body once, on
    // the first; the others name the request without repeating it.
    let member = scim.create_user("member").await["id"].as_str().unwrap().to_owned();
    let group = scim.post("/Groups", json!({"schemas": [GROUP], "displayName": "Old"})).await;
    let group_id = group.body["id"].as_str().unwrap().to_owned();
    let replaced = scim
        .put(
            &format!("/Groups/{group_id}"),
            json!({"schemas": [GROUP], "displayName": "New", "members": [{"value": member}]}),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let history = server.store.log().read_stream(&tenant, &format!("group:{group_id}")).unwrap();
    let put: Vec<_> = history.iter().skip(1).map(|event| event.metadata().unwrap()).collect();
    assert_eq!(put.len(), 3, "GroupUpdated, GroupRenamed, GroupMembersAdded");
    assert!(put[0].request.as_ref().unwrap().body.is_some());
    for later in &put[1..] {
        let request = later.request.as_ref().unwrap();
        assert_eq!((request.method.as_str(), request.body.as_ref()), ("PUT", None));
        assert_eq!(later.request_id, put[0].request_id);
    }
    // Whatever case the body uses for Operations, what is recorded is what
    // was applied.
    let upper = scim
        .send(
            reqwest::Method::PATCH,
            &format!("/Users/{sneaky_id}"),
            Some(json!({"OPERATIONS": [{"op": "replace", "path": "title", "value": "y"}]})),
        )
        .await;
    assert_eq!(upper.status, 200, "{}", upper.body);
    let events = server.store.log().read_stream(&tenant, &format!("user:{sneaky_id}")).unwrap();
    let recorded = events[events.len() - 1].payload_opened(server.store.keys()).unwrap();
    assert_eq!(
        recorded["change"]["operations"],
        json!([{"op": "replace", "path": "title", "value": "y"}])
    );
    assert_eq!(server.store.log().verify(VerifyScope::All).unwrap().failure, None);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_scim_errors_and_write_nothing() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    scim.create_user("bjensen").await;
    let head = server.store.log().head().unwrap();

    assert_error(
        &scim.post("/Users", json!({"userName": "BJENSEN"})).await,
        409,
        Some("uniqueness"),
    );
    assert_error(
        &scim.post("/Users", json!({"name": {"givenName": "x"}})).await,
        400,
        Some("invalidValue"),
    );
    assert_error(
        &scim.post("/Users", json!({"userName": "x", "active": "maybe"})).await,
        400,
        Some("invalidValue"),
    );
    assert_error(
        &scim.post("/Users", json!(["not", "an", "object"])).await,
        400,
        Some("invalidSyntax"),
    );
    let malformed = server
        .client
        .post(server.url("/scim/v2/Users"))
        .bearer_auth(&scim.token)
        .header("content-type", "application/scim+json")
        .body("{\"userName\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.json::<Value>().await.unwrap()["scimType"], "invalidSyntax");
    let wrong_type = server
        .client
        .post(server.url("/scim/v2/Users"))
        .bearer_auth(&scim.token)
        .header("content-type", "text/plain")
        .body("{\"userName\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    assert_error(&scim.get("/Users?filter=userName%20eq").await, 400, Some("invalidFilter"));
    assert_error(&scim.get("/Users?filter=active%20gt%20true").await, 400, Some("invalidFilter"));
    assert_error(&scim.get("/Users?count=many").await, 400, Some("invalidValue"));
    assert_error(&scim.get("/Users/no-such-id").await, 404, None);
    assert_error(&scim.put("/Users/no-such-id", json!({"userName": "x"})).await, 404, None);
    assert_error(&scim.delete("/Users/no-such-id").await, 404, None);
    assert_error(&scim.send(reqwest::Method::PUT, "/Users", Some(json!({}))).await, 405, None);
    assert_error(&scim.post("/ServiceProviderConfig", json!({})).await, 405, None);
    assert_error(&scim.get("/Nothing").await, 404, None);
    assert_eq!(server.store.log().head().unwrap(), head, "nothing was appended");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_guards_writes() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let id = scim.create_user("bjensen").await["id"].as_str().unwrap().to_owned();
    let put = |etag: &'static str| {
        server
            .client
            .put(server.url(&format!("/scim/v2/Users/{id}")))
            .bearer_auth(&scim.token)
            .header("content-type", "application/scim+json")
            .header("if-match", etag)
            .body(json!({"userName": "bjensen", "title": etag}).to_string())
            .send()
    };
    assert_eq!(put("W/\"7\"").await.unwrap().status(), 412);
    assert_eq!(put("W/\"1\"").await.unwrap().status(), 200);
    assert_eq!(put("W/\"1\"").await.unwrap().status(), 412, "the version moved on");
    assert_eq!(put("*").await.unwrap().status(), 200);
    // A precondition that cannot be read cannot hold.
    let unreadable = server
        .client
        .put(server.url(&format!("/scim/v2/Users/{id}")))
        .bearer_auth(&scim.token)
        .header("content-type", "application/scim+json")
        .header("if-match", reqwest::header::HeaderValue::from_bytes(b"W/\"\xff\"").unwrap())
        .body(json!({"userName": "bjensen"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unreadable.status(), 412);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_204_then_404() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let id = scim.create_user("bjensen").await["id"].as_str().unwrap().to_owned();
    let deleted = scim.delete(&format!("/Users/{id}")).await;
    assert_eq!((deleted.status, deleted.body), (204, Value::Null));
    assert_error(&scim.get(&format!("/Users/{id}")).await, 404, None);
    assert_error(&scim.delete(&format!("/Users/{id}")).await, 404, None);
    // The name is free again.
    scim.create_user("bjensen").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_page() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    for name in ["alice", "bob", "carol", "dave"] {
        scim.create_user(name).await;
    }
    // Entra ID's Test Connection: a filter that matches nothing is 200.
    let none =
        scim.get("/Users?filter=userName%20eq%20%2200000000-0000-0000-0000-000000000000%22").await;
    assert_eq!(none.status, 200);
    assert_eq!(
        none.body,
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0,
               "startIndex": 1, "itemsPerPage": 0, "Resources": []})
    );
    let page = scim.get("/Users?startIndex=2&count=2").await.body;
    assert_eq!(
        (page["totalResults"].clone(), page["startIndex"].clone(), page["itemsPerPage"].clone()),
        (json!(4), json!(2), json!(2))
    );
    let names: Vec<&str> = page["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["bob", "carol"]);
    let counted = scim.get("/Users?count=0").await.body;
    assert_eq!(
        (counted["totalResults"].clone(), counted["Resources"].clone()),
        (json!(4), json!([]))
    );
    let found = scim
        .get("/Users?filter=userName%20sw%20%22C%22%20or%20userName%20eq%20%22DAVE%22")
        .await
        .body;
    assert_eq!(found["totalResults"], 2);
    let searched = scim
        .post("/Users/.search", json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName eq \"bob\"", "attributes": ["userName"]}))
        .await;
    assert_eq!(searched.status, 200, "{}", searched.body);
    assert_eq!(
        searched.body["Resources"][0],
        json!({"schemas": [USER], "id": searched.body["Resources"][0]["id"], "userName": "bob"})
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_hold_members_and_users_show_their_groups() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let alice = scim.create_user("alice").await["id"].as_str().unwrap().to_owned();
    let bob = scim.create_user("bob").await["id"].as_str().unwrap().to_owned();
    let created = scim.post("/Groups", json!({"schemas": [GROUP], "displayName": "Admins", "members": [{"value": alice}, {"value": alice}]})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let group = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.body["members"],
        json!([{"value": alice, "type": "User", "$ref": format!("{}/scim/v2/Users/{alice}", server.base)}])
    );
    let user = scim.get(&format!("/Users/{alice}")).await.body;
    assert_eq!(
        user["groups"],
        json!([{"value": group, "display": "Admins", "type": "direct", "$ref": format!("{}/scim/v2/Groups/{group}", server.base)}])
    );
    assert_error(
        &scim.post("/Groups", json!({"displayName": "admins"})).await,
        409,
        Some("uniqueness"),
    );
    // An unknown member id is kept as a reference (RFC 7644 asks no
    // referential integrity, and strict clients expect it accepted).
    let ops =
        scim.post("/Groups", json!({"displayName": "Ops", "members": [{"value": "ghost"}]})).await;
    assert_eq!(ops.status, 201, "{}", ops.body);
    assert_eq!(ops.body["members"][0]["value"], "ghost");
    assert_error(
        &scim
            .put(
                &format!("/Groups/{group}"),
                json!({"displayName": "Admins", "members": [{"value": group}]}),
            )
            .await,
        400,
        Some("invalidValue"),
    );

    let replaced = scim
        .put(
            &format!("/Groups/{group}"),
            json!({"displayName": "Administrators", "members": [{"value": bob}]}),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let members: Vec<&str> = replaced.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec![bob.as_str()]);
    let without = scim.get(&format!("/Groups/{group}?excludedAttributes=members")).await.body;
    assert!(without.get("members").is_none());
    assert_eq!(without["displayName"], "Administrators");
    let filtered =
        scim.get(&format!("/Groups?filter=members%5Bvalue%20eq%20%22{bob}%22%5D")).await.body;
    assert_eq!(filtered["totalResults"], 1);

    let tenant = tenant_id(&server, "acme").await;
    let kinds: Vec<String> = server
        .store
        .log()
        .read_stream(&tenant, &format!("group:{group}"))
        .unwrap()
        .iter()
        .map(|event| event.event_type.clone())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "GroupCreated",
            "GroupUpdated",
            "GroupRenamed",
            "GroupMembersAdded",
            "GroupMembersRemoved"
        ]
    );
    // Deleting a member takes it out of its groups, as an event of each
    // group (its history and version say so).
    let etag_before = scim.get(&format!("/Groups/{group}")).await.headers["etag"].clone();
    assert_eq!(scim.delete(&format!("/Users/{bob}")).await.status, 204);
    let group_events = event_types(&server, &format!("group:{group}")).await;
    assert_eq!(group_events.last().map(String::as_str), Some("GroupMembersRemoved"));
    assert_ne!(scim.get(&format!("/Groups/{group}")).await.headers["etag"], etag_before);
    assert!(scim.get(&format!("/Groups/{group}")).await.body.get("members").is_none());
    let everything = scim.post("/.search", json!({"filter": "meta.resourceType pr"})).await.body;
    assert_eq!(everything["totalResults"], 3, "alice and the two groups: {everything}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_sees_nothing() {
    let server = TestServer::start().await;
    let acme = Scim::new(&server, "acme").await;
    let globex = Scim::new(&server, "globex").await;
    let id = acme.create_user("bjensen").await["id"].as_str().unwrap().to_owned();
    assert_error(&globex.get(&format!("/Users/{id}")).await, 404, None);
    assert_error(&globex.put(&format!("/Users/{id}"), json!({"userName": "x"})).await, 404, None);
    assert_error(&globex.delete(&format!("/Users/{id}")).await, 404, None);
    assert_eq!(globex.get("/Users").await.body["totalResults"], 0);
    assert_eq!(
        globex.get("/Users?filter=userName%20eq%20%22bjensen%22").await.body["totalResults"],
        0
    );
    // The same userName is free in another tenant.
    globex.create_user("bjensen").await;
    assert_eq!(acme.get(&format!("/Users/{id}")).await.status, 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_describes_what_is_supported() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let config = scim.get("/ServiceProviderConfig").await.body;
    assert_eq!(config["patch"]["supported"], true);
    assert_eq!(config["filter"], json!({"supported": true, "maxResults": 1000}));
    assert_eq!(
        config["bulk"],
        json!({"supported": true, "maxOperations": 1000, "maxPayloadSize": 2097152})
    );
    assert_eq!(config["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let types = scim.get("/ResourceTypes").await.body;
    assert_eq!(types["totalResults"], 2);
    let user_type = scim.get("/ResourceTypes/User").await.body;
    assert_eq!(user_type["schemaExtensions"], json!([{"schema": ENTERPRISE, "required": false}]));
    assert_error(&scim.get("/ResourceTypes/Robot").await, 404, None);
    let schemas = scim.get("/Schemas").await.body;
    let ids: Vec<&str> = schemas["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![USER, ENTERPRISE, GROUP]);
    let user_schema = scim.get(&format!("/Schemas/{USER}")).await.body;
    let user_name = &user_schema["attributes"][0];
    assert_eq!(
        (user_name["name"].clone(), user_name["uniqueness"].clone(), user_name["required"].clone()),
        (json!("userName"), json!("server"), json!(true))
    );
    assert_error(&scim.get("/Schemas/urn:nope").await, 404, None);
    server.stop().await.unwrap();
}

impl Scim<'_> {
    pub(crate) async fn patch(&self, path: &str, operations: Value) -> Answer {
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations});
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }
}

async fn event_types(server: &TestServer, stream: &str) -> Vec<String> {
    let tenant = tenant_id(server, "acme").await;
    server
        .store
        .log()
        .read_stream(&tenant, stream)
        .unwrap()
        .iter()
        .map(|event| event.event_type.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_users_the_way_identity_providers_do() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let created = scim
        .post(
            "/Users",
            json!({"userName": "bjensen", "emails": [{"value": "b@home.org", "type": "home"}]}),
        )
        .await
        .body;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/Users/{id}");

    // Entra ID: op names in any case, booleans as strings, dotted keys.
    let patched = scim
        .patch(
            &path,
            json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Add", "value": {"name.givenName": "Barbara", "title": "Guide"}},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@work.com"}
            ]),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(
        without_server_fields(patched.body.clone()),
        json!({
            "schemas": [USER], "userName": "bjensen", "active": false, "title": "Guide",
            "name": {"givenName": "Barbara"},
            "emails": [{"value": "b@home.org", "type": "home"}, {"value": "b@work.com", "type": "work"}]
        })
    );
    assert_eq!(patched.headers["etag"], "W/\"3\"");
    assert_eq!(
        event_types(&server, &format!("user:{id}")).await,
        vec!["UserCreated", "UserUpdated", "UserDeactivated"]
    );

    // Remove by value filter, and reactivate.
    let patched = scim
        .patch(&path, json!([{"op": "remove", "path": "emails[type eq \"home\"]"}, {"op": "replace", "value": {"active": true}}]))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["emails"], json!([{"value": "b@work.com", "type": "work"}]));
    assert_eq!(patched.body["active"], true);
    assert_eq!(
        event_types(&server, &format!("user:{id}")).await.last().map(String::as_str),
        Some("UserReactivated")
    );
    let found = scim
        .get("/Users?filter=emails%5Btype%20eq%20%22work%22%5D.value%20eq%20%22B@WORK.COM%22")
        .await
        .body;
    assert_eq!(found["totalResults"], 1, "the patched document is what filters see");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_patches_are_scim_errors_and_apply_nothing() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let id = scim.create_user("bjensen").await["id"].as_str().unwrap().to_owned();
    let path = format!("/Users/{id}");
    let head = server.store.log().head().unwrap();
    assert_error(
        &scim
            .patch(&path, json!([{"op": "replace", "path": "emails[type eq", "value": "x"}]))
            .await,
        400,
        Some("invalidPath"),
    );
    assert_error(&scim.patch(&path, json!([{"op": "remove"}])).await, 400, Some("noTarget"));
    assert_error(
        &scim.patch(&path, json!([{"op": "replace", "path": "id", "value": "mine"}])).await,
        400,
        Some("mutability"),
    );
    assert_error(
        &scim.patch(&path, json!([{"op": "frobnicate", "path": "title", "value": "x"}])).await,
        400,
        Some("invalidSyntax"),
    );
    assert_error(&scim.patch(&path, json!([])).await, 400, Some("invalidSyntax"));
    // The first operation is fine, the second is not: neither applies.
    let half = scim
        .patch(&path, json!([{"op": "replace", "path": "title", "value": "Guide"}, {"op": "replace", "path": "active", "value": "perhaps"}]))
        .await;
    assert_error(&half, 400, Some("invalidValue"));
    assert_error(
        &scim.patch(&path, json!([{"op": "remove", "path": "userName"}])).await,
        400,
        Some("invalidValue"),
    );
    assert_eq!(server.store.log().head().unwrap(), head, "nothing was appended");
    assert!(scim.get(&path).await.body.get("title").is_none());
    assert_error(
        &scim
            .patch("/Users/no-such-id", json!([{"op": "replace", "path": "title", "value": "x"}]))
            .await,
        404,
        None,
    );
    let stale = server
        .client
        .patch(server.url(&format!("/scim/v2{path}")))
        .bearer_auth(&scim.token)
        .header("content-type", "application/scim+json")
        .header("if-match", "W/\"9\"")
        .body(json!({"Operations": [{"op": "replace", "path": "title", "value": "x"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_group_membership_in_every_dialect() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let mut users = Vec::new();
    for name in ["u-a", "u-b", "u-c"] {
        users.push(scim.create_user(name).await["id"].as_str().unwrap().to_owned());
    }
    let group = scim.post("/Groups", json!({"displayName": "Staff"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/Groups/{group}");
    let member_ids = |body: &Value| -> Vec<String> {
        let mut ids: Vec<String> = body["members"]
            .as_array()
            .map(|m| m.iter().map(|m| m["value"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let mut everyone = users.clone();
    everyone.sort();

    // Entra ID: many members in one Add, with "$ref": null.
    let added = scim
        .patch(&path, json!([{"op": "Add", "path": "members", "value": users.iter().map(|id| json!({"$ref": null, "value": id})).collect::<Vec<_>>()}]))
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(member_ids(&added.body), everyone);
    // The RFC's remove by filter.
    let removed = scim
        .patch(
            &path,
            json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", users[0])}]),
        )
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(member_ids(&removed.body).len(), 2);
    // Entra ID's older dialect: remove with a value list.
    let removed = scim
        .patch(&path, json!([{"op": "Remove", "path": "members", "value": [{"value": users[1]}]}]))
        .await;
    assert_eq!(member_ids(&removed.body), vec![users[2].clone()]);
    // Rename.
    let renamed = scim
        .patch(&path, json!([{"op": "Replace", "path": "displayName", "value": "Everyone"}]))
        .await;
    assert_eq!(renamed.body["displayName"], "Everyone");
    assert_eq!(
        event_types(&server, &format!("group:{group}")).await,
        vec![
            "GroupCreated",
            "GroupMembersAdded",
            "GroupMembersRemoved",
            "GroupMembersRemoved",
            "GroupUpdated",
            "GroupRenamed"
        ]
    );
    let user = scim.get(&format!("/Users/{}", users[2])).await.body;
    assert_eq!(user["groups"][0]["display"], "Everyone");
    server.stop().await.unwrap();
}

/// Writes are answered from what their command wrote, not read back: the
/// answer must be exactly what a GET then returns (ETag included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_answered_exactly_as_they_read_back() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let user = scim
        .post(
            "/Users",
            json!({
                "schemas": [USER, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                "userName": "Read.Back@example.com",
                "externalId": "ext-1",
                "name": {"givenName": "Read", "familyName": "Back"},
                "emails": [{"value": "read.back@example.com", "type": "work", "primary": true}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "QA"},
                "password": "never kept",
            }),
        )
        .await;
    assert_eq!(user.status, 201, "{}", user.body);
    let user_id = user.body["id"].as_str().unwrap().to_owned();
    let other = scim.create_user("other").await["id"].as_str().unwrap().to_owned();
    let group = scim
        .post(
            "/Groups",
            json!({"displayName": "Readers", "externalId": "g-1", "members": [
                {"value": other}, {"value": user_id}, {"value": "unknown-ref", "type": "Group"},
                {"value": other},
            ]}),
        )
        .await;
    assert_eq!(group.status, 201, "{}", group.body);
    let empty = scim.post("/Groups", json!({"displayName": "Nobody"})).await;
    for created in [&user, &group, &empty] {
        let location = created.headers["location"].to_str().unwrap();
        let path = location.split("/scim/v2").nth(1).unwrap();
        let read = scim.get(path).await;
        if created.body["schemas"][0] == USER {
            // The user's groups changed since it was created.
            let mut read_body = read.body.clone();
            read_body.as_object_mut().unwrap().remove("groups");
            assert_eq!(created.body, read_body);
        } else {
            assert_eq!(created.body, read.body);
        }
        assert_eq!(created.headers["etag"], read.headers["etag"]);
    }

    // Writes too are answered from what the command wrote: a deactivating
    // PATCH (two events), a no-op PATCH, a PUT, a group PATCH.
    let user_path = format!("/Users/{user_id}");
    let group_path = format!("/Groups/{}", group.body["id"].as_str().unwrap());
    let deactivate = json!([{"op": "replace", "path": "active", "value": false},
        {"op": "replace", "path": "externalId", "value": "ext-2"}]);
    let rename = json!([{"op": "replace", "path": "displayName", "value": "Writers"},
        {"op": "add", "path": "members", "value": [{"value": "another-ref"}]}]);
    let steps = [
        (user_path.clone(), reqwest::Method::PATCH, patch_body(deactivate.clone())),
        (user_path.clone(), reqwest::Method::PATCH, patch_body(deactivate)),
        (
            user_path.clone(),
            reqwest::Method::PUT,
            json!({"schemas": [USER], "userName": "read.back@example.com", "active": true}),
        ),
        (group_path.clone(), reqwest::Method::PATCH, patch_body(rename)),
    ];
    for (path, method, body) in steps {
        let written = scim.send(method.clone(), &path, Some(body)).await;
        assert_eq!(written.status, 200, "{method} {path}: {}", written.body);
        let read = scim.get(&path).await;
        assert_eq!(written.body, read.body, "{method} {path}");
        assert_eq!(written.headers["etag"], read.headers["etag"], "{method} {path}");
    }
    // The indexed columns moved with the writes that changed them (they are
    // written apart from the document, and only when they change).
    assert_eq!(found(&scim, r#"externalId eq "ext-1""#).await, 0);
    // The PUT left externalId out: cleared.
    assert_eq!(found(&scim, r#"externalId eq "ext-2""#).await, 0);
    assert_eq!(found(&scim, r#"userName eq "read.back@example.com""#).await, 1);
    let renamed = scim
        .send(
            reqwest::Method::PATCH,
            &user_path,
            Some(patch_body(
                json!([{"op": "replace", "value": {"userName": "renamed", "externalId": "ext-3"}}]),
            )),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(found(&scim, r#"userName eq "read.back@example.com""#).await, 0);
    assert_eq!(found(&scim, r#"userName eq "RENAMED""#).await, 1);
    assert_eq!(found(&scim, r#"externalId eq "ext-3""#).await, 1);
    server.stop().await.unwrap();
}

async fn found(scim: &Scim<'_>, filter: &str) -> Value {
    let path = format!("/Users?filter={}", filter.replace(' ', "%20").replace('"', "%22"));
    scim.get(&path).await.body["totalResults"].clone()
}

fn patch_body(operations: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations})
}
