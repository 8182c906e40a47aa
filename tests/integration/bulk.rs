//! POST /Bulk (RFC 7644 section 3.7) against a real server: bulkId
//! references in paths and data, out-of-order and circular references,
//! failOnErrors, If-Match per operation, the limits, and that a failed
//! operation writes nothing while the others stand.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::scim::{GROUP, Scim, USER, assert_error};
use crate::util::TestServer;

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

fn bulk(operations: Value) -> Value {
    json!({"schemas": [BULK_REQUEST], "Operations": operations})
}

fn events_in_log(server: &TestServer) -> usize {
    // The head counts the events on either backend.
    usize::try_from(server.log_head()).unwrap()
}

/// Each answered operation's status, in order.
fn statuses(response: &Value) -> Vec<&str> {
    response["Operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|operation| operation["status"].as_str().unwrap())
        .collect()
}

/// A POST of a new group whose members are other operations' bulkIds.
fn new_group(bulk_id: &str, name: &str, members: &[&str]) -> Value {
    let members: Vec<Value> =
        members.iter().map(|member| json!({"value": format!("bulkId:{member}")})).collect();
    json!({"method": "POST", "path": "/Groups", "bulkId": bulk_id,
           "data": {"schemas": [GROUP], "displayName": name, "members": members}})
}

/// A POST of a new user whose manager is another operation's user.
fn new_user_managed_by(bulk_id: &str, manager: &str) -> Value {
    let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    json!({"method": "POST", "path": "/Users", "bulkId": bulk_id,
           "data": {"schemas": [USER, enterprise], "userName": bulk_id,
                    enterprise: {"manager": {"value": format!("bulkId:{manager}")}}}})
}

/// The id at the end of an operation's location.
fn id_of(operation: &Value) -> String {
    operation["location"].as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_ids_resolve_in_paths_and_data_in_any_order() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    // The group is sent before the user it names, and the PATCH names the
    // group by its bulkId in the path.
    let answer = scim
        .post(
            "/Bulk",
            bulk(json!([
                {"method": "POST", "path": "/Groups", "bulkId": "staff",
                 "data": {"schemas": [GROUP], "displayName": "Staff",
                          "members": [{"type": "User", "value": "bulkId:alice"}]}},
                {"method": "POST", "path": "/Users", "bulkId": "alice",
                 "data": {"schemas": [USER], "userName": "alice@example.com"}},
                {"method": "PATCH", "path": "/Groups/bulkId:staff",
                 "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                          "Operations": [{"op": "replace", "path": "displayName", "value": "All staff"}]}}
            ])),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["schemas"], json!([BULK_RESPONSE]));
    let operations = answer.body["Operations"].as_array().unwrap();
    assert_eq!(operations.len(), 3);
    assert_eq!(statuses(&answer.body), ["201", "201", "200"]);
    assert_eq!(operations[0]["bulkId"], "staff");
    assert_eq!(operations[1]["method"], "POST");
    assert!(operations.iter().all(|op| op.get("response").is_none()));
    let (group_id, user_id) = (id_of(&operations[0]), id_of(&operations[1]));
    assert_eq!(operations[2]["location"], operations[0]["location"]);
    assert_eq!(
        operations[0]["location"],
        format!("{}/scim/v2/Groups/{group_id}", server.base),
        "locations are absolute"
    );

    let group = scim.get(&format!("/Groups/{group_id}")).await;
    assert_eq!(group.body["displayName"], "All staff");
    assert_eq!(
        group.body["members"],
        json!([{"value": user_id, "type": "User",
        "$ref": format!("{}/scim/v2/Users/{user_id}", server.base)}])
    );
    assert_eq!(group.headers["etag"], operations[2]["version"].as_str().unwrap());
    let user = scim.get(&format!("/Users/{user_id}")).await;
    assert_eq!(user.headers["etag"], operations[1]["version"].as_str().unwrap());

    // Each operation's events record that operation as sent, under the
    // Bulk request's id.
    let tenant = server.tenant_id("acme");
    let created = server.store.log().read_stream(&tenant, &format!("user:{user_id}")).unwrap();
    let metadata = created[0].metadata_opened(server.store.keys()).unwrap();
    assert_eq!(metadata.request_id.as_deref(), Some("req-under-test"));
    assert_eq!(
        metadata.request,
        Some(events::RequestRecord {
            method: "POST".to_owned(),
            target: "/scim/v2/Users".to_owned(),
            body: Some(json!({"schemas": [USER], "userName": "alice@example.com"})),
        })
    );
    let renamed = server.store.log().read_stream(&tenant, &format!("group:{group_id}")).unwrap();
    let request = renamed.last().unwrap().metadata().unwrap().request.unwrap();
    assert_eq!(request.target, "/scim/v2/Groups/bulkId:staff", "as the client wrote it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circular_references_between_new_groups_are_resolved() {
    // RFC 7644 section 3.7.1: each group is a member of the other.
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let answer = scim
        .post(
            "/Bulk",
            bulk(json!([new_group("a", "Group A", &["b"]), new_group("b", "Group B", &["a"])])),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let operations = answer.body["Operations"].as_array().unwrap();
    assert_eq!(operations.len(), 2);
    assert!(operations.iter().all(|op| op["status"] == "201"), "{}", answer.body);
    let (a, b) = (id_of(&operations[0]), id_of(&operations[1]));
    for (group, member) in [(&a, &b), (&b, &a)] {
        let got = scim.get(&format!("/Groups/{group}")).await;
        let members: Vec<&str> = got.body["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|member| member["value"].as_str().unwrap())
            .collect();
        assert_eq!(members, [member.as_str()]);
        let answered = operations.iter().find(|op| id_of(op) == *group).unwrap();
        assert_eq!(got.headers["etag"], answered["version"].as_str().unwrap(), "latest version");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_operation_writes_nothing_and_the_others_stand() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    scim.create_user("taken@example.com").await;
    let before = events_in_log(&server);
    let answer = scim
        .post(
            "/Bulk",
            bulk(json!([
                {"method": "POST", "path": "/Users", "bulkId": "one",
                 "data": {"schemas": [USER], "userName": "one@example.com"}},
                {"method": "POST", "path": "/Users", "bulkId": "dup",
                 "data": {"schemas": [USER], "userName": "TAKEN@example.com"}},
                {"method": "DELETE", "path": "/Users/no-such-user"},
                {"method": "PATCH", "path": "/Users/bulkId:dup",
                 "data": {"Operations": [{"op": "replace", "path": "active", "value": false}]}},
                {"method": "POST", "path": "/Users", "bulkId": "two",
                 "data": {"schemas": [USER], "userName": "two@example.com"}}
            ])),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let operations = answer.body["Operations"].as_array().unwrap();
    assert_eq!(statuses(&answer.body), ["201", "409", "404", "409", "201"]);
    assert_eq!(operations[1]["response"]["scimType"], "uniqueness");
    assert_eq!(
        operations[1]["response"]["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
    );
    assert!(operations[3]["response"]["detail"].as_str().unwrap().contains("dup"));
    assert!(operations[1].get("location").is_none(), "a failed POST has no location");
    assert_eq!(
        operations[2]["location"],
        format!("{}/scim/v2/Users/no-such-user", server.base),
        "RFC 7644 3.7.3: other failed operations say where"
    );
    assert_eq!(
        events_in_log(&server),
        before + 2,
        "one UserCreated per created user, nothing else"
    );
    let listed = scim.get("/Users?count=10").await;
    assert_eq!(listed.body["totalResults"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_on_errors_stops_at_the_limit() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let operations = json!([
        {"method": "DELETE", "path": "/Users/missing-1"},
        {"method": "POST", "path": "/Users", "bulkId": "a",
         "data": {"schemas": [USER], "userName": "a@example.com"}},
        {"method": "DELETE", "path": "/Users/missing-2"},
        {"method": "POST", "path": "/Users", "bulkId": "b",
         "data": {"schemas": [USER], "userName": "b@example.com"}}
    ]);
    let answer = scim
        .post(
            "/Bulk",
            json!({"schemas": [BULK_REQUEST], "failOnErrors": 2, "Operations": operations}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(statuses(&answer.body), ["404", "201", "404"], "the fourth is never run");
    let b = scim.get("/Users?filter=userName%20eq%20%22b@example.com%22").await;
    assert_eq!(b.body["totalResults"], 0);

    let answer = scim
        .post(
            "/Bulk",
            json!({"schemas": [BULK_REQUEST], "failOnErrors": 1, "Operations": operations}),
        )
        .await;
    assert_eq!(answer.body["Operations"].as_array().unwrap().len(), 1);
    for bad in [json!(0), json!(-1), json!("two"), json!(1.5)] {
        let answer = scim
            .post(
                "/Bulk",
                json!({"schemas": [BULK_REQUEST], "failOnErrors": bad, "Operations": []}),
            )
            .await;
        assert_error(&answer, 400, Some("invalidValue"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_honours_its_version() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let user = scim.create_user("versioned@example.com").await;
    let id = user["id"].as_str().unwrap();
    let current = user["meta"]["version"].as_str().unwrap().to_owned();
    let before = events_in_log(&server);
    let patch = |version: &str| {
        json!({"method": "PATCH", "path": format!("/Users/{id}"), "version": version,
               "data": {"Operations": [{"op": "replace", "path": "displayName", "value": "New"}]}})
    };
    let answer = scim.post("/Bulk", bulk(json!([patch("W/\"999\"")]))).await;
    assert_eq!(answer.body["Operations"][0]["status"], "412", "{}", answer.body);
    assert_eq!(events_in_log(&server), before, "a stale version writes nothing");
    let answer = scim.post("/Bulk", bulk(json!([patch(&current)]))).await;
    assert_eq!(answer.body["Operations"][0]["status"], "200", "{}", answer.body);
    assert_ne!(answer.body["Operations"][0]["version"], current.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_and_malformed_operations_answer_alone() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let before = events_in_log(&server);
    let answer = scim
        .post(
            "/Bulk",
            bulk(json!([
                {"method": "PATCH", "path": "/Groups/bulkId:nowhere",
                 "data": {"Operations": [{"op": "replace", "path": "displayName", "value": "x"}]}},
                {"method": "POST", "path": "/Users",
                 "data": {"schemas": [USER], "userName": "no-bulk-id@example.com"}},
                {"method": "FETCH", "path": "/Users/x"},
                {"method": "POST", "path": "/Widgets", "bulkId": "w", "data": {}},
                {"method": "PUT", "path": "/Users", "data": {"userName": "x"}},
                {"method": "POST", "path": "/Users", "bulkId": "u", "data": "not an object"},
                {"method": "POST", "path": "/Users", "bulkId": "u1",
                 "data": {"schemas": [USER], "userName": "first@example.com"}},
                {"method": "POST", "path": "/Users", "bulkId": "u1",
                 "data": {"schemas": [USER], "userName": "second@example.com"}},
                {"method": "POST", "path": "/Groups", "bulkId": "self",
                 "data": {"schemas": [GROUP], "displayName": "Self", "manager": "bulkId:self"}},
                "not an operation"
            ])),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let operations = answer.body["Operations"].as_array().unwrap();
    assert_eq!(
        statuses(&answer.body),
        ["409", "400", "400", "400", "400", "400", "201", "400", "409", "400"]
    );
    let scim_types: Vec<&str> =
        operations.iter().filter_map(|op| op["response"]["scimType"].as_str()).collect();
    assert_eq!(
        scim_types,
        [
            "invalidValue",
            "invalidValue",
            "invalidPath",
            "invalidPath",
            "invalidSyntax",
            "invalidValue",
            "invalidSyntax"
        ]
    );
    assert_eq!(operations[2]["method"], "FETCH", "the method is echoed as sent");
    assert_eq!(events_in_log(&server), before + 1, "only the one good POST wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_bulk_requests_fail_whole() {
    let config = rollcall::state::ServerConfig {
        bulk_operations_max: 3,
        body_limit_bytes: 4096,
        ..Default::default()
    };
    let server = TestServer::start_with(config).await;
    let scim = Scim::new(&server, "acme").await;
    let before = events_in_log(&server);
    let user = |n: usize| {
        json!({"method": "POST", "path": "/Users", "bulkId": format!("u{n}"),
               "data": {"schemas": [USER], "userName": format!("user{n}@example.com")}})
    };
    let four: Vec<Value> = (0..4).map(user).collect();
    let answer = scim.post("/Bulk", bulk(Value::Array(four))).await;
    assert_error(&answer, 413, None);
    assert!(answer.body["detail"].as_str().unwrap().contains("at most 3 operations"));
    let padded = json!([{"method": "POST", "path": "/Users", "bulkId": "big",
        "data": {"schemas": [USER], "userName": "big@example.com", "nickName": "x".repeat(5000)}}]);
    let answer = scim.post("/Bulk", bulk(padded)).await;
    assert_error(&answer, 413, None);
    for malformed in [
        json!({"schemas": [BULK_REQUEST]}),
        json!({"schemas": [BULK_REQUEST], "Operations": {"method": "POST"}}),
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": []}),
        json!([{"method": "POST"}]),
    ] {
        let answer = scim.post("/Bulk", malformed).await;
        assert_error(&answer, 400, Some("invalidSyntax"));
    }
    assert_eq!(events_in_log(&server), before, "nothing was written");
    let answer = scim.get("/Bulk").await;
    assert_error(&answer, 405, None);

    let config = scim.get("/ServiceProviderConfig").await;
    assert_eq!(
        config.body["bulk"],
        json!({"supported": true, "maxOperations": 3, "maxPayloadSize": 4096})
    );
    let empty = scim.post("/Bulk", bulk(json!([]))).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["Operations"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_cycle_keeps_its_groups_and_drops_nothing_silently() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    // A typo among a cycle's references fails the operation up front (it
    // used to be deferred and dropped), and what waited on it fails too.
    let answer = scim
        .post(
            "/Bulk",
            bulk(json!([new_group("g1", "G1", &["g2", "typo"]), new_group("g2", "G2", &["g1"])])),
        )
        .await;
    assert_eq!(statuses(&answer.body), ["409", "409"], "{}", answer.body);
    assert!(answer.body["Operations"][0]["response"]["detail"].as_str().unwrap().contains("typo"));
    assert_eq!(scim.get("/Groups").await.body["totalResults"], 0);

    // A group created to break a cycle stays created (201) even when its
    // deferred members can no longer be added, and the deferred add is
    // recorded as the group's own operation.
    let answer = scim
        .post(
            "/Bulk",
            bulk(json!([
                new_group("a", "A", &["b"]),
                new_group("b", "B", &["a"]),
                {"method": "DELETE", "path": "/Groups/bulkId:a"}
            ])),
        )
        .await;
    assert_eq!(statuses(&answer.body), ["201", "201", "204"], "{}", answer.body);

    let answer = scim
        .post("/Bulk", bulk(json!([new_group("c", "C", &["d"]), new_group("d", "D", &["c"])])))
        .await;
    let c = id_of(&answer.body["Operations"][0]);
    let tenant = server.tenant_id("acme");
    let history = server.store.log().read_stream(&tenant, &format!("group:{c}")).unwrap();
    let added = history.iter().find(|event| event.event_type == "GroupMembersAdded").unwrap();
    let request = added.metadata().unwrap().request.unwrap();
    assert_eq!((request.method.as_str(), request.target.as_str()), ("POST", "/scim/v2/Groups"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_bulk_request_yields_the_writer_between_slices() {
    // No budget: every slice is one step, so the count of commits shows
    // the request yielded the writer between operations.
    let config = rollcall::state::ServerConfig {
        bulk_command_budget: std::time::Duration::ZERO,
        ..Default::default()
    };
    if crate::util::sqlite_only("counts the SQLite writer's batches") {
        return;
    }
    let server = TestServer::start_with(config).await;
    let scim = Scim::new(&server, "acme").await;
    let batches_before =
        server.store.log().sqlite().unwrap().stats().batches_committed.load(Ordering::Relaxed);
    let operations: Vec<Value> = (0..1000)
        .map(|n| {
            json!({"method": "POST", "path": "/Users", "bulkId": format!("u{n}"),
                   "data": {"schemas": [USER], "userName": format!("bulk{n}@example.com"),
                            "name": {"givenName": "Bulk", "familyName": n.to_string()}}})
        })
        .collect();
    let answer = scim.post("/Bulk", bulk(Value::Array(operations))).await;
    assert_eq!(answer.status, 200);
    let operations = answer.body["Operations"].as_array().unwrap();
    assert_eq!(operations.len(), 1000);
    assert!(operations.iter().all(|op| op["status"] == "201"));
    let batches =
        server.store.log().sqlite().unwrap().stats().batches_committed.load(Ordering::Relaxed)
            - batches_before;
    assert!(batches >= 1000, "a thousand creates took {batches} writer command(s)");
    assert_eq!(scim.get("/Users?count=0").await.body["totalResults"], 1000);
}

/// Members of the group a cycle is broken at, as a GET shows them.
async fn member_ids(scim: &Scim<'_>, id: &str) -> Vec<String> {
    let group = scim.get(&format!("/Groups/{id}")).await.body;
    let mut ids: Vec<String> = group["members"]
        .as_array()
        .map(|members| members.iter().map(|m| m["value"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_is_broken_inside_it_and_later_operations_see_its_members() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let pair = |members_of_g1: Value| {
        json!([
            {"method": "POST", "path": "/Groups", "bulkId": "g1",
             "data": {"schemas": [GROUP], "displayName": "G1", "members": members_of_g1}},
            new_group("g2", "G2", &["g1"])
        ])
    };

    // A lone member object (read as a list of one) is deferred like a list.
    let answer =
        scim.post("/Bulk", bulk(pair(json!({"type": "Group", "value": "bulkId:g2"})))).await;
    assert_eq!(statuses(&answer.body), ["201", "201"], "{}", answer.body);
    let (g1, g2) = (id_of(&answer.body["Operations"][0]), id_of(&answer.body["Operations"][1]));
    assert_eq!(member_ids(&scim, &g1).await, vec![g2.clone()]);
    assert_eq!(member_ids(&scim, &g2).await, vec![g1.clone()]);
    // Each answer's version is the ETag its resource has now (g1's after
    // its deferred members were added).
    for (operation, id) in [(0, &g1), (1, &g2)] {
        let etag = scim.get(&format!("/Groups/{id}")).await.headers["etag"].clone();
        assert_eq!(answer.body["Operations"][operation]["version"], etag.to_str().unwrap());
    }
    for id in [&g1, &g2] {
        assert_eq!(scim.delete(&format!("/Groups/{id}")).await.status, 204);
    }

    // An operation on the group comes after its deferred members are in:
    // the remove of all members leaves it empty, as in request order.
    let mut operations = pair(json!([{"value": "bulkId:g2"}]));
    operations.as_array_mut().unwrap().push(json!({"method": "PATCH", "path": "/Groups/bulkId:g1",
        "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                 "Operations": [{"op": "remove", "path": "members"}]}}));
    let answer = scim.post("/Bulk", bulk(operations)).await;
    assert_eq!(statuses(&answer.body), ["201", "201", "200"], "{}", answer.body);
    let g1 = id_of(&answer.body["Operations"][0]);
    assert_eq!(member_ids(&scim, &g1).await, Vec::<String>::new());
    let version = |operation: &Value| operation["version"].as_str().unwrap().to_owned();
    let read = scim.get(&format!("/Groups/{g1}")).await;
    assert_eq!(read.headers["etag"].to_str().unwrap(), version(&answer.body["Operations"][2]));
    for operation in answer.body["Operations"].as_array().unwrap().iter().take(2) {
        scim.delete(&format!("/Groups/{}", id_of(operation))).await;
    }

    // failOnErrors stopping the request does not take a created group's
    // deferred members away.
    let mut operations = pair(json!([{"value": "bulkId:g2"}]));
    operations.as_array_mut().unwrap().push(json!({"method": "PATCH", "path": "/Groups/bulkId:g2",
        "data": {"Operations": [{"op": "replace", "path": "id", "value": "nope"}]}}));
    let mut request = bulk(operations);
    request["failOnErrors"] = json!(1);
    let answer = scim.post("/Bulk", request).await;
    assert_eq!(statuses(&answer.body), ["201", "201", "400"], "{}", answer.body);
    let (g1, g2) = (id_of(&answer.body["Operations"][0]), id_of(&answer.body["Operations"][1]));
    assert_eq!(member_ids(&scim, &g1).await, vec![g2.clone()]);
    for id in [&g1, &g2] {
        scim.delete(&format!("/Groups/{id}")).await;
    }

    // A group that only waits on a cycle of users (which cannot be broken)
    // is not on that cycle: it fails with them instead of being created
    // without its member.
    let answer = scim
        .post(
            "/Bulk",
            bulk(json!([
                new_group("g3", "G3", &["u1"]),
                new_user_managed_by("u1", "u2"),
                new_user_managed_by("u2", "u1")
            ])),
        )
        .await;
    assert_eq!(statuses(&answer.body), ["409", "409", "409"], "{}", answer.body);
    assert_eq!(scim.get("/Groups").await.body["totalResults"], 0);

    // A broken cycle's group gets the deferred members whose operations
    // ran, even when another of them then fails with a cycle of users.
    let mut g3 = new_group("g3", "G3", &["g1"]);
    // Waiting on u1 otherwise than as a member: g3 cannot be broken at.
    g3["data"]["externalId"] = json!("bulkId:u1");
    let answer = scim
        .post(
            "/Bulk",
            bulk(json!([
                new_group("g1", "G1", &["g2", "g3"]),
                new_group("g2", "G2", &["g1"]),
                g3,
                new_user_managed_by("u1", "u2"),
                new_user_managed_by("u2", "u1")
            ])),
        )
        .await;
    assert_eq!(statuses(&answer.body), ["201", "201", "409", "409", "409"], "{}", answer.body);
    let (g1, g2) = (id_of(&answer.body["Operations"][0]), id_of(&answer.body["Operations"][1]));
    assert_eq!(member_ids(&scim, &g1).await, vec![g2]);
    server.stop().await.unwrap();
}
