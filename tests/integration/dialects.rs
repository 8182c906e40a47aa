//! What real identity providers send, request by request, beyond the core
//! protocol (issue 5). Each test names where the behaviour is documented:
//! Microsoft's "Tutorial: Develop and plan provisioning for a SCIM
//! endpoint in Microsoft Entra ID" (Entra), Okta's "SCIM 2.0 protocol
//! reference" (Okta), and OneLogin's SCIM provisioning notes (OneLogin).

use events::event::TokenScope;
use serde_json::{Value, json};

use crate::util::TestServer;

async fn client(server: &TestServer) -> String {
    server.tenant("acme").await;
    server.token("acme", TokenScope::Scim).await.1
}

async fn send(
    server: &TestServer,
    token: &str,
    method: reqwest::Method,
    path: impl AsRef<str>,
    body: Option<(&str, Value)>,
) -> (u16, Value) {
    let mut request = server
        .client
        .request(method, server.url(&format!("/scim/v2{}", path.as_ref())))
        .bearer_auth(token);
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

async fn create(server: &TestServer, token: &str, body: Value) -> String {
    let (status, created) =
        send(server, token, reqwest::Method::POST, "/Users", Some(("application/scim+json", body)))
            .await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

fn names(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["userName"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_sort_by_any_attribute_in_either_order() {
    let server = TestServer::start().await;
    let token = client(&server).await;
    for (name, title) in [
        ("carol", Some("b-title")),
        ("Alice", None),
        ("bob", Some("A-title")),
        ("dave", Some("c-title")),
    ] {
        let mut body = json!({"userName": name, "emails": [{"value": format!("{name}@x.org")}]});
        if let Some(title) = title {
            body["title"] = Value::from(title);
        }
        create(&server, &token, body).await;
    }
    let get = |query: &'static str| send(&server, &token, reqwest::Method::GET, query, None);
    assert_eq!(
        names(&get("/Users?sortBy=userName").await.1),
        vec!["Alice", "bob", "carol", "dave"],
        "case-insensitive"
    );
    assert_eq!(
        names(&get("/Users?sortBy=USERNAME&sortOrder=DESCENDING").await.1),
        vec!["dave", "carol", "bob", "Alice"]
    );
    assert_eq!(
        names(&get("/Users?sortBy=meta.created&sortOrder=descending&count=2").await.1),
        vec!["dave", "bob"]
    );
    assert_eq!(
        names(&get("/Users?sortBy=title").await.1),
        vec!["bob", "carol", "dave", "Alice"],
        "missing values last"
    );
    assert_eq!(
        names(&get("/Users?sortBy=title&sortOrder=descending").await.1),
        vec!["dave", "carol", "bob", "Alice"]
    );
    assert_eq!(
        names(&get("/Users?sortBy=emails").await.1),
        vec!["Alice", "bob", "carol", "dave"],
        "the first value"
    );
    let (status, body) = get("/Users?sortBy=userName&sortOrder=sideways").await;
    assert_eq!((status, body["scimType"].clone()), (400, json!("invalidValue")));
    let searched = send(
        &server,
        &token,
        reqwest::Method::POST,
        "/Users/.search",
        Some((
            "application/scim+json",
            json!({"sortBy": "userName", "sortOrder": "descending", "startIndex": 2, "count": 2}),
        )),
    )
    .await;
    assert_eq!(names(&searched.1), vec!["carol", "bob"]);
    let config = get("/ServiceProviderConfig").await.1;
    assert_eq!(config["sort"]["supported"], true);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_matches_with_unquoted_values_and_tests_connections_on_groups() {
    // Entra: Test Connection queries a random GUID on Users and Groups and
    // expects 200 with an empty list; matching values may come unquoted.
    let server = TestServer::start().await;
    let token = client(&server).await;
    create(&server, &token, json!({"userName": "jyoung@example.com", "externalId": "jyoung"}))
        .await;
    let get = |query: String| send(&server, &token, reqwest::Method::GET, query, None);
    let (status, found) = get("/Users?filter=externalId%20eq%20jyoung".to_owned()).await;
    assert_eq!((status, found["totalResults"].clone()), (200, json!(1)));
    for endpoint in ["Users?filter=userName", "Groups?filter=displayName"] {
        let (status, none) =
            get(format!("/{endpoint}%20eq%20%22a8c1e6d2-3f4b-4e5a-9c7d-1b2a3c4d5e6f%22")).await;
        assert_eq!(
            (status, none["totalResults"].clone(), none["Resources"].clone()),
            (200, json!(0), json!([]))
        );
        let (status, none) =
            get(format!("/{endpoint}%20eq%20a8c1e6d2-3f4b-4e5a-9c7d-1b2a3c4d5e6f")).await;
        assert_eq!((status, none["totalResults"].clone()), (200, json!(0)), "unquoted GUID");
    }
    // Entra creates groups listing its own schema URN beside the core one.
    let (status, group) = send(
        &server,
        &token,
        reqwest::Method::POST,
        "/Groups",
        Some((
            "application/scim+json",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                   "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159", "displayName": "Group1"}),
        )),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    // Its name and externalId are kept; the ADSCIM URN carries no
    // attributes, so the group is served with the one schema it has; and
    // Entra finds it again by either value.
    assert_eq!(group["displayName"], "Group1");
    assert_eq!(group["externalId"], "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159");
    assert_eq!(group["schemas"], json!(["urn:ietf:params:scim:schemas:core:2.0:Group"]));
    assert_eq!(group["meta"]["resourceType"], "Group");
    let id = group["id"].as_str().unwrap();
    let (status, fetched) = get(format!("/Groups/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, group, "a GET answers what the POST did");
    for filter in [
        "externalId%20eq%20%228aa1a0c0-c4c3-4bc0-b4a5-2ef676900159%22",
        "displayName%20eq%20%22Group1%22",
    ] {
        let (status, found) = get(format!("/Groups?filter={filter}")).await;
        assert_eq!(status, 200);
        assert_eq!(found["totalResults"], 1, "{filter}: {found}");
        assert_eq!(found["Resources"][0]["id"], id, "{filter}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_sends_text_json_renames_with_id_in_the_value_and_pushes_empty_groups() {
    // Okta: Content-Type may be text/json; "Push now" of an empty group is
    // `replace members []`; a rename carries the id in the value object.
    let server = TestServer::start().await;
    let token = client(&server).await;
    let (status, user) = send(
        &server,
        &token,
        reqwest::Method::POST,
        "/Users",
        Some(("text/json", json!({"userName": "okta-user"}))),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let user_id = user["id"].as_str().unwrap().to_owned();
    let (_, group) = send(
        &server,
        &token,
        reqwest::Method::POST,
        "/Groups",
        Some((
            "application/json",
            json!({"displayName": "Okta Group", "members": [{"value": user_id}]}),
        )),
    )
    .await;
    let group_id = group["id"].as_str().unwrap().to_owned();
    let patch = |operations: Value| {
        send(
            &server,
            &token,
            reqwest::Method::PATCH,
            format!("/Groups/{group_id}"),
            Some((
                "application/json",
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations}),
            )),
        )
    };
    let (status, renamed) =
        patch(json!([{"op": "replace", "value": {"id": group_id, "displayName": "Okta Group 2"}}]))
            .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["displayName"], "Okta Group 2");
    assert_eq!(renamed["members"][0]["value"], user_id, "a rename keeps the members");
    let (status, emptied) = patch(json!([{"op": "replace", "path": "members", "value": []}])).await;
    assert_eq!(status, 200, "{emptied}");
    assert!(emptied.get("members").is_none(), "{emptied}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onelogin_trailing_ampersands_and_legacy_urns() {
    // OneLogin: a trailing `&` in query strings, draft schema URNs on PUT.
    let server = TestServer::start().await;
    let token = client(&server).await;
    let id = create(&server, &token, json!({"userName": "ol-user"})).await;
    let (status, list) =
        send(&server, &token, reqwest::Method::GET, "/Users?startIndex=1&count=100&", None).await;
    assert_eq!((status, list["totalResults"].clone()), (200, json!(1)));
    let (status, replaced) = send(
        &server,
        &token,
        reqwest::Method::PUT,
        format!("/Users/{id}"),
        Some((
            "application/scim+json",
            json!({"schemas": ["urn:scim:schemas:core:2.0", "urn:scim:schemas:extension:enterprise:2.0"],
                   "userName": "ol-user", "urn:scim:schemas:extension:enterprise:2.0": {"department": "Sales"}}),
        )),
    )
    .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(
        replaced["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
        "Sales"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_can_be_provisioned_again() {
    // Peers' bug trackers: re-provisioning a deleted user looped on 409.
    let server = TestServer::start().await;
    let token = client(&server).await;
    let body = json!({"userName": "again@example.com", "externalId": "ext-again"});
    let first = create(&server, &token, body.clone()).await;
    let (status, _) =
        send(&server, &token, reqwest::Method::DELETE, format!("/Users/{first}"), None).await;
    assert_eq!(status, 204);
    let second = create(&server, &token, body).await;
    assert_ne!(first, second);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_roles_and_managers_in_its_own_shapes() {
    // Entra: roles on POST, app roles added by PATCH as JSON-encoded
    // strings, the manager as a plain id, and an empty value to clear it.
    let server = TestServer::start().await;
    let token = client(&server).await;
    let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let id = create(
        &server,
        &token,
        json!({"userName": "roles@example.com",
               "roles": [{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}]}),
    )
    .await;
    let path = format!("/Users/{id}");
    let patch = |operations: Value| {
        send(
            &server,
            &token,
            reqwest::Method::PATCH,
            path.clone(),
            Some((
                "application/scim+json",
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations}),
            )),
        )
    };
    let (status, patched) = patch(json!([
        {"op": "Add", "path": "roles", "value": [{"value": "{\"id\":\"7c3b\",\"value\":\"Editor\",\"displayName\":\"Content Editor\"}"}]},
        {"op": "Replace", "path": format!("{enterprise}:manager"), "value": "boss-id"}
    ]))
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["roles"],
        json!([{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}, {"value": "Editor", "display": "Content Editor"}])
    );
    assert_eq!(patched[enterprise]["manager"], json!({"value": "boss-id"}));
    let (status, cleared) =
        patch(json!([{"op": "Replace", "path": format!("{enterprise}:manager"), "value": ""}]))
            .await;
    assert_eq!(status, 200, "{cleared}");
    assert!(cleared.get(enterprise).is_none_or(|ext| ext.get("manager").is_none()), "{cleared}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_adds_a_thousand_members_in_one_patch() {
    // Entra: many members in one Add, `"$ref": null` on each.
    let server = TestServer::start().await;
    let token = client(&server).await;
    let mut ids = Vec::new();
    for n in 0..1000 {
        ids.push(create(&server, &token, json!({"userName": format!("member{n}")})).await);
    }
    let (_, group) = send(
        &server,
        &token,
        reqwest::Method::POST,
        "/Groups",
        Some(("application/scim+json", json!({"displayName": "Big"}))),
    )
    .await;
    let group_path = format!("/Groups/{}", group["id"].as_str().unwrap());
    let members: Vec<Value> = ids.iter().map(|id| json!({"$ref": null, "value": id})).collect();
    let started = std::time::Instant::now();
    let (status, patched) = send(
        &server,
        &token,
        reqwest::Method::PATCH,
        group_path.clone(),
        Some((
            "application/scim+json",
            json!({"Operations": [{"op": "Add", "path": "members", "value": members}]}),
        )),
    )
    .await;
    eprintln!("1,000 members added in {:?} (debug build)", started.elapsed());
    assert_eq!(status, 200);
    assert_eq!(patched["members"].as_array().unwrap().len(), 1000);
    let (_, removed) = send(
        &server,
        &token,
        reqwest::Method::PATCH,
        group_path.clone(),
        Some(("application/scim+json", json!({"Operations": [{"op": "Remove", "path": "members", "value": ids[..500].iter().map(|id| json!({"value": id})).collect::<Vec<_>>()}]}))),
    )
    .await;
    assert_eq!(removed["members"].as_array().unwrap().len(), 500);
    let (_, slim) = send(&server, &token, reqwest::Method::GET, group_path.clone(), None).await;
    assert_eq!(slim["members"].as_array().unwrap().len(), 500);
    let (_, slim) = send(
        &server,
        &token,
        reqwest::Method::GET,
        format!("{group_path}?excludedAttributes=members"),
        None,
    )
    .await;
    assert!(slim.get("members").is_none());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_group_answers_patch_with_204() {
    // RFC 7644 3.5.2 allows 204; above the configured size the group is not
    // serialised on every membership change.
    let config =
        rollcall::state::ServerConfig { patch_response_members_max: 2, ..Default::default() };
    let server = TestServer::start_with(config).await;
    let token = client(&server).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(create(&server, &token, json!({"userName": format!("p{n}")})).await);
    }
    let (_, group) = send(
        &server,
        &token,
        reqwest::Method::POST,
        "/Groups",
        Some(("application/scim+json", json!({"displayName": "G"}))),
    )
    .await;
    let path = format!("/Groups/{}", group["id"].as_str().unwrap());
    let add = |id: &str| json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]});
    for (n, id) in ids.iter().enumerate() {
        let response = server
            .client
            .patch(server.url(&format!("/scim/v2{path}")))
            .bearer_auth(&token)
            .header("content-type", "application/scim+json")
            .body(add(id).to_string())
            .send()
            .await
            .unwrap();
        let expected = if n < 2 { 200 } else { 204 };
        assert_eq!(response.status(), expected, "member {n}");
        assert!(response.headers().contains_key("etag"));
    }
    let (_, full) = send(&server, &token, reqwest::Method::GET, path, None).await;
    assert_eq!(full["members"].as_array().unwrap().len(), 3);
    server.stop().await.unwrap();
}

/// Requests new clients send that the core protocol spells otherwise
/// (issue 19, item 7): each is answered as the canonical request is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_slashes_other_cases_and_value_filters_in_attributes() {
    let server = TestServer::start().await;
    let token = client(&server).await;
    let id = create(
        &server,
        &token,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ann@example.com",
            "emails": [
                {"value": "ann@work.example", "type": "work", "primary": true},
                {"value": "ann@home.example", "type": "home"},
            ],
        }),
    )
    .await;
    let get = reqwest::Method::GET;
    let filter = "?filter=userName%20eq%20%22ann%40example.com%22";

    // A trailing slash on a resource path, with and without a query.
    let (status, canonical) = send(&server, &token, get.clone(), "/Users", None).await;
    assert_eq!(status, 200);
    for path in ["/Users/".to_owned(), "/users".to_owned(), "/USERS/".to_owned()] {
        let (status, body) = send(&server, &token, get.clone(), &path, None).await;
        assert_eq!((status, &body), (200, &canonical), "{path}");
    }
    let (status, found) =
        send(&server, &token, get.clone(), format!("/Users/{filter}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(found["totalResults"], 1);
    let (status, one) = send(&server, &token, get.clone(), format!("/users/{id}/"), None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], id.as_str());
    // Writes too: a PATCH through the lower-case endpoint.
    let patch = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "Engineer"}],
    });
    let (status, patched) = send(
        &server,
        &token,
        reqwest::Method::PATCH,
        format!("/users/{id}"),
        Some(("application/scim+json", patch)),
    )
    .await;
    assert_eq!((status, patched["title"].as_str()), (200, Some("Engineer")), "{patched}");
    for path in ["/groups/", "/serviceproviderconfig", "/Schemas/", "/resourcetypes"] {
        let (status, body) = send(&server, &token, get.clone(), path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // An id that is not text (bad UTF-8 percent-encoded) names nothing: a
    // SCIM 404, not the router's plain-text 400.
    for path in ["/Users/%FF", "/Groups/%C3%28", "/Schemas/%FF"] {
        let (status, body) = send(&server, &token, get.clone(), path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{path}");
    }
    // What is not an endpoint in any case stays a SCIM 404.
    let (status, body) = send(&server, &token, get.clone(), "/Accounts/", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");

    // A value filter inside `attributes`: only the matching values.
    let work = r#"emails[type eq "work"]"#;
    let (status, body) =
        send(&server, &token, get.clone(), format!("/Users/{id}?attributes={work}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["emails"],
        json!([{"value": "ann@work.example", "type": "work", "primary": true}])
    );
    assert!(body.get("userName").is_none(), "{body}");
    let (status, body) = send(
        &server,
        &token,
        get.clone(),
        format!("/Users{filter}&attributes=userName,{work}.value"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let listed = &body["Resources"][0];
    assert_eq!(listed["userName"], "ann@example.com");
    assert_eq!(listed["emails"], json!([{"value": "ann@work.example"}]));
    // None matching: the attribute is not returned at all.
    let (status, body) = send(
        &server,
        &token,
        get.clone(),
        format!(r#"/Users/{id}?attributes=emails[type eq "other"]"#),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.get("emails").is_none(), "{body}");
    // And the same in a search body; a malformed filter is a SCIM 400.
    let search = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "userName eq \"ann@example.com\"",
        "attributes": [work],
    });
    let (status, body) = send(
        &server,
        &token,
        reqwest::Method::POST,
        "/users/.search",
        Some(("application/scim+json", search)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Resources"][0]["emails"].as_array().map(Vec::len), Some(1));
    let (status, body) =
        send(&server, &token, get, format!(r#"/Users/{id}?attributes=emails[type eq]"#), None)
            .await;
    assert_eq!((status, body["scimType"].as_str()), (400, Some("invalidFilter")), "{body}");
}

/// Every value has a documented bound (issue 19, item 6): a 1 MB userName,
/// 101 emails or a PATCH that makes them 101 is a SCIM 400 naming the
/// limit, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_their_bounds_are_refused_with_the_limit_named() {
    let server = TestServer::start().await;
    let token = client(&server).await;
    let user = "urn:ietf:params:scim:schemas:core:2.0:User";
    let head = server.log_head();
    let post = |body: Value| {
        send(
            &server,
            &token,
            reqwest::Method::POST,
            "/Users",
            Some(("application/scim+json", body)),
        )
    };
    let (status, body) = post(json!({"schemas": [user], "userName": "a".repeat(1_000_000)})).await;
    assert_eq!((status, body["scimType"].as_str()), (400, Some("invalidValue")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("userName is longer than 1024 characters"));
    let emails: Vec<Value> =
        (0..101).map(|n| json!({"value": format!("{n}@example.com")})).collect();
    let (status, body) =
        post(json!({"schemas": [user], "userName": "ann", "emails": emails})).await;
    assert_eq!((status, body["scimType"].as_str()), (400, Some("tooMany")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("at most 100"), "{body}");
    assert_eq!(server.log_head(), head, "nothing written");

    let emails: Vec<Value> =
        (0..100).map(|n| json!({"value": format!("{n}@example.com")})).collect();
    let id =
        create(&server, &token, json!({"schemas": [user], "userName": "ann", "emails": emails}))
            .await;
    let head = server.log_head();
    let patch = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "emails", "value": [{"value": "one-more@example.com"}]}],
    });
    let (status, body) = send(
        &server,
        &token,
        reqwest::Method::PATCH,
        format!("/Users/{id}"),
        Some(("application/scim+json", patch)),
    )
    .await;
    assert_eq!((status, body["scimType"].as_str()), (400, Some("tooMany")), "{body}");
    assert_eq!(server.log_head(), head, "nothing written");
}
