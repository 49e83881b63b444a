//! `POST /inquiries/search` end to end: the simulator answers in the spec's shapes from an index
//! that trails the inquiries by the lag, the query language and paging find what they should,
//! and the client's typed calls (search, fresh reads by id) work over real HTTP.

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::time::Duration;

use inquiry_mailer::domain::{ApiKey, InquiryId, InquiryStatus, TemplateId};
use inquiry_mailer::persona::{ClientConfig, PersonaClient, SearchError};
use persona_sim::{Action, Faults, SearchResults, SimHandle, Switches};
use serde_json::{Value, json};

use crate::support::sim::{API_KEY, Api, start_sim};
use crate::support::spec::{validate_request_body, validate_response};

const LAG: Duration = Duration::from_secs(60);
const SECOND_TEMPLATE: (&str, &str) = (
    "itmpl_SecondTemplate00000000001",
    "itmplv_SecondTemplate0000000001",
);

fn client(sim: &SimHandle, max_retries: u32) -> PersonaClient {
    PersonaClient::new(ClientConfig {
        api_base: sim.api_base(),
        api_version: "2025-12-08".into(),
        api_key: ApiKey::new(API_KEY),
        requests_per_minute: NonZeroU32::new(6000).unwrap(),
        timeout: Duration::from_secs(10),
        max_retries,
        retry_base_delay: Duration::from_millis(10),
    })
    .unwrap()
}

/// The simulator's own template (not [`SECOND_TEMPLATE`], which some tests add).
fn template(sim: &SimHandle) -> String {
    sim.templates()
        .into_iter()
        .map(|(t, _)| t)
        .find(|t| t != SECOND_TEMPLATE.0)
        .expect("the simulator has its own template")
}

async fn create(api: &Api, template: &str, reference: &str) -> String {
    let body = api
        .create(
            template,
            json!({"auto-create-account-reference-id": reference}),
        )
        .await;
    body["data"]["id"].as_str().unwrap().to_owned()
}

fn ids_of(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn search(api: &Api, body: Value) -> Value {
    let r = api.post("/inquiries/search", Some(body), None).await;
    assert_eq!(r.status, 200, "search answered {:?}", r.body);
    r.body
}

/// Every search request and answer in the simulator's log, checked against the spec; returns
/// how many were checked and which statuses they had.
fn assert_searches_conform(sim: &SimHandle) -> (usize, BTreeSet<u16>) {
    let mut failures = Vec::new();
    let mut statuses = BTreeSet::new();
    let mut checked = 0;
    for r in sim.requests() {
        if r.route.as_deref() != Some("/inquiries/search") {
            continue;
        }
        checked += 1;
        if let (Some(status), Some(response)) = (r.status, r.response.as_ref()) {
            statuses.insert(status);
            if let Err(e) = validate_response("POST", "/inquiries/search", status, response) {
                failures.push(format!("answer {status}: {e:?}"));
            }
        }
        // A malformed request is sent on purpose below; the spec must reject exactly those.
        if let Some(body) = &r.body
            && r.status != Some(400)
            && let Err(e) = validate_request_body("POST", "/inquiries/search", body)
        {
            failures.push(format!("request {body}: {e:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "spec violations:\n{}",
        failures.join("\n")
    );
    (checked, statuses)
}

#[tokio::test]
async fn search_requests_and_answers_match_the_spec() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let t = template(&sim);
    let ids = [
        create(&api, &t, "user-1").await,
        create(&api, &t, "user-2").await,
        create(&api, &t, "user-3").await,
    ];
    sim.act(&ids[0], Action::Complete).unwrap();
    sim.advance_clock(LAG + Duration::from_secs(1));

    // The spec's own request examples, with our template id.
    let examples = [
        json!({"query": {"attribute": "status", "operator": "eq", "value": "completed"},
               "sort": {"attribute": "created_at", "direction": "asc"}, "page": {"size": 15}}),
        json!({"query": {"or": [
                   {"attribute": "status", "operator": "eq", "value": "pending"},
                   {"attribute": "status", "operator": "eq", "value": "completed"},
                   {"attribute": "status", "operator": "eq", "value": "approved"}]},
               "sort": {"attribute": "created_at", "direction": "desc"}, "page": {"size": 15}}),
        json!({"query": {"and": [
                   {"attribute": "inquiry_template_id", "operator": "eq", "value": t},
                   {"or": [{"attribute": "status", "operator": "eq", "value": "completed"},
                           {"attribute": "status", "operator": "eq", "value": "approved"}]},
                   {"attribute": "created_at", "operator": "gte", "value": "2025-01-01"}]},
               "sort": {"attribute": "created_at", "direction": "desc"}, "page": {"size": 15}}),
        json!({"page": {"size": 15}}),
    ];
    let found: Vec<Vec<String>> = {
        let mut all = Vec::new();
        for body in &examples {
            assert!(validate_request_body("POST", "/inquiries/search", body).is_ok());
            all.push(ids_of(&search(&api, body.clone()).await));
        }
        all
    };
    assert_eq!(found[0], vec![ids[0].clone()]);
    assert_eq!(found[1], vec![ids[0].clone()]);
    assert_eq!(found[2], vec![ids[0].clone()]);
    assert_eq!(found[3].len(), 3);

    // Paging links, and the client's own request bodies.
    let paged = search(&api, json!({"page": {"size": 2}})).await;
    assert!(paged["links"]["next"].is_string());
    let next = paged["links"]["next"].as_str().unwrap();
    let second = api
        .post(
            next.trim_start_matches("/api/v1"),
            Some(json!({"page": {"size": 2}})),
            None,
        )
        .await;
    assert_eq!(second.status, 200);
    assert!(second.body["links"]["prev"].is_string());
    let since = sim.clock().now() - chrono::Duration::hours(1);
    let by_client = client(&sim, 0)
        .search_all_updated_since(&TemplateId::parse(&t).unwrap(), since)
        .await
        .unwrap();
    assert_eq!(by_client.len(), 3);

    // A malformed query is a 400 in the spec's error shape; a refusal is the spec's 403.
    let bad = json!({"query": {"attribute": "status", "operator": "eq"}});
    assert!(validate_request_body("POST", "/inquiries/search", &bad).is_err());
    let r = api.post("/inquiries/search", Some(bad), None).await;
    assert_eq!(r.status, 400);
    sim.set_switches(Switches {
        search_refused_with: Some(403),
        ..Switches::default()
    });
    assert_eq!(api.post("/inquiries/search", None, None).await.status, 403);

    let (checked, statuses) = assert_searches_conform(&sim);
    assert_eq!(checked, 9);
    assert_eq!(statuses, BTreeSet::from([200, 400, 403]));
    // The check itself fails on an answer that is not the spec's shape.
    assert!(
        validate_response("POST", "/inquiries/search", 200, &json!({"data": []})).is_err(),
        "links are required"
    );
}

#[tokio::test]
async fn a_completion_is_found_by_updated_at_only_once_the_lag_passed() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let t = template(&sim);
    let persona = client(&sim, 0);
    let tid = TemplateId::parse(&t).unwrap();
    let id = create(&api, &t, "user-lag").await;

    // A new inquiry is not searchable before the lag.
    let created = sim.clock().now();
    let found = |all: &[inquiry_mailer::persona::Inquiry]| all.iter().any(|i| i.id.as_str() == id);
    assert!(!found(
        &persona
            .search_all_updated_since(&tid, created - chrono::Duration::minutes(5))
            .await
            .unwrap()
    ));
    sim.advance_clock(LAG);
    assert!(found(
        &persona
            .search_all_updated_since(&tid, created - chrono::Duration::minutes(5))
            .await
            .unwrap()
    ));

    // Completed now: a search for changes since just before it does not see it yet…
    sim.advance_clock(Duration::from_secs(300));
    let before_change = sim.clock().now() - chrono::Duration::seconds(1);
    sim.act(&id, Action::Complete).unwrap();
    let completed =
        json!({"query": {"attribute": "status", "operator": "eq", "value": "completed"}});
    sim.advance_clock(LAG - Duration::from_secs(2));
    assert!(!found(
        &persona
            .search_all_updated_since(&tid, before_change)
            .await
            .unwrap()
    ));
    assert!(
        ids_of(&search(&api, completed.clone()).await).is_empty(),
        "still found by its old status only"
    );
    // …and does once the lag passed, showing the inquiry as it is now.
    sim.advance_clock(Duration::from_secs(3));
    let after = persona
        .search_all_updated_since(&tid, before_change)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].status, InquiryStatus::Completed);
    assert_eq!(ids_of(&search(&api, completed).await), vec![id.clone()]);

    // The lag is a switch: at zero, a change is searchable at once.
    sim.set_switches(Switches {
        search_lag_seconds: 0,
        ..Switches::default()
    });
    let at = sim.clock().now() - chrono::Duration::milliseconds(1);
    sim.act(&id, Action::Approve).unwrap();
    let now_found = persona.search_all_updated_since(&tid, at).await.unwrap();
    assert_eq!(now_found.len(), 1);
    assert_eq!(now_found[0].status, InquiryStatus::Approved);
}

#[tokio::test]
async fn indexed_results_show_what_the_index_saw() {
    let sim = start_sim(|c| {
        c.switches.search_results = SearchResults::Indexed;
    })
    .await;
    let api = Api::new(&sim);
    let id = create(&api, &template(&sim), "user-stale").await;
    sim.advance_clock(LAG + Duration::from_secs(1));
    sim.act(&id, Action::Complete).unwrap();
    let body = search(&api, json!({})).await;
    assert_eq!(ids_of(&body), vec![id.clone()]);
    assert_eq!(body["data"][0]["attributes"]["status"], "created");
    // The fresh read the daemon decides on tells the truth.
    let fresh = client(&sim, 0)
        .inquiries_by_id(&[InquiryId::parse(&id).unwrap()])
        .await
        .unwrap();
    assert_eq!(fresh[0].status, InquiryStatus::Completed);
}

#[tokio::test]
async fn boolean_queries_find_exactly_what_they_describe() {
    let sim = start_sim(|c| {
        c.templates
            .push((SECOND_TEMPLATE.0.into(), SECOND_TEMPLATE.1.into()));
    })
    .await;
    let api = Api::new(&sim);
    let a = template(&sim);
    let b = SECOND_TEMPLATE.0;
    let a_created = create(&api, &a, "alice").await;
    let a_pending = create(&api, &a, "bob").await;
    let a_completed = create(&api, &a, "carol").await;
    let b_completed = create(&api, b, "alice").await;
    let b_approved = create(&api, b, "dave").await;
    sim.act(&a_pending, Action::Start).unwrap();
    sim.act(&a_completed, Action::Complete).unwrap();
    sim.act(&b_completed, Action::Complete).unwrap();
    sim.act(&b_approved, Action::Complete).unwrap();
    sim.act(&b_approved, Action::Approve).unwrap();
    sim.advance_clock(LAG + Duration::from_secs(1));
    let late = create(&api, &a, "erin").await;

    let eq = |attr: &str, v: &str| json!({"attribute": attr, "operator": "eq", "value": v});
    let found = |q: Value| {
        let api = api.clone();
        async move {
            let body = search(&api, json!({"query": q, "page": {"size": 100}})).await;
            ids_of(&body).into_iter().collect::<BTreeSet<String>>()
        }
    };
    let set = |ids: &[&String]| ids.iter().map(|s| (*s).clone()).collect::<BTreeSet<_>>();

    assert_eq!(
        found(eq("inquiry_template_id", &a)).await,
        set(&[&a_created, &a_pending, &a_completed]),
        "the inquiry created within the lag is not indexed yet"
    );
    assert_eq!(
        found(json!({"and": [eq("inquiry_template_id", b), eq("status", "completed")]})).await,
        set(&[&b_completed])
    );
    assert_eq!(
        found(json!({"or": [eq("status", "approved"), eq("status", "created")]})).await,
        set(&[&b_approved, &a_created])
    );
    assert_eq!(
        found(json!({"and": [eq("inquiry_template_id", &a), {"not": eq("status", "completed")}]}))
            .await,
        set(&[&a_created, &a_pending])
    );
    assert_eq!(
        found(eq("reference_id", "alice")).await,
        set(&[&a_created, &b_completed]),
        "reference_id is the account's"
    );
    let now = sim.clock().now();
    let iso =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(
        found(json!({"and": [
            {"attribute": "created_at", "operator": "lt", "value": iso(now)},
            {"attribute": "created_at", "operator": "gte", "value": iso(now - chrono::Duration::hours(1))},
            {"or": [eq("status", "pending"), eq("status", "approved")]}
        ]}))
        .await,
        set(&[&a_pending, &b_approved])
    );
    sim.advance_clock(LAG);
    assert!(found(eq("reference_id", "erin")).await.contains(&late));

    // What the spec forbids is refused: 3 levels of nesting, 21 clauses, unknown attributes.
    let too_deep = json!({"and": [{"or": [{"not": eq("status", "created")}]}]});
    let too_wide = json!({"or": (0..21).map(|_| eq("status", "created")).collect::<Vec<_>>()});
    for q in [too_deep, too_wide, eq("note", "x")] {
        let r = api
            .post("/inquiries/search", Some(json!({ "query": q })), None)
            .await;
        assert_eq!(r.status, 400, "{q}: {:?}", r.body);
    }
}

#[tokio::test]
async fn paging_walks_every_match_once_in_sort_order() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let t = template(&sim);
    let mut created = Vec::new();
    for i in 0..205 {
        created.push(create(&api, &t, &format!("user-{i}")).await);
        sim.advance_clock(Duration::from_millis(5));
    }
    sim.advance_clock(LAG);

    // By hand, 10 a page: the body is re-sent to each links.next, as the spec says.
    let body =
        json!({"sort": {"attribute": "created_at", "direction": "asc"}, "page": {"size": 10}});
    let mut seen = Vec::new();
    let mut path = "/inquiries/search".to_owned();
    let mut pages = 0;
    loop {
        let page = search_at(&api, &path, body.clone()).await;
        pages += 1;
        seen.extend(ids_of(&page));
        match page["links"]["next"].as_str() {
            Some(next) => path = next.trim_start_matches("/api/v1").to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 21);
    assert_eq!(seen, created, "every inquiry once, oldest first");
    let back = search_at(
        &api,
        &format!("/inquiries/search?page%5Bbefore%5D={}", created[20]),
        body.clone(),
    )
    .await;
    assert_eq!(ids_of(&back), created[10..20].to_vec());

    // The client reads all pages (100 a page) through the same endpoint.
    sim.clear_requests();
    let since = sim.clock().now() - chrono::Duration::hours(1);
    let all = client(&sim, 0)
        .search_all_updated_since(&TemplateId::parse(&t).unwrap(), since)
        .await
        .unwrap();
    let got: Vec<String> = all.iter().map(|i| i.id.as_str().to_owned()).collect();
    assert_eq!(got, created, "oldest created first, none twice");
    assert_eq!(sim.count_requests("POST", "/inquiries/search"), 3);
}

async fn search_at(api: &Api, path: &str, body: Value) -> Value {
    let r = api.post(path, Some(body), None).await;
    assert_eq!(r.status, 200, "{path} answered {:?}", r.body);
    r.body
}

#[tokio::test]
async fn a_refused_search_is_told_apart_from_a_transient_failure() {
    let sim = start_sim(|_| {}).await;
    let persona = client(&sim, 1);
    let tid = TemplateId::parse(&template(&sim)).unwrap();
    let since = sim.clock().now();

    for status in [403, 404] {
        sim.set_switches(Switches {
            search_refused_with: Some(status),
            ..Switches::default()
        });
        let e = persona
            .search_all_updated_since(&tid, since)
            .await
            .unwrap_err();
        assert!(matches!(e, SearchError::Refused(_)), "{status}: {e}");
        assert_eq!(e.persona_error().status(), Some(status));
    }
    sim.set_switches(Switches::default());
    sim.set_faults(Faults {
        server_errors_next: 2,
        ..Faults::default()
    });
    let e = persona
        .search_all_updated_since(&tid, since)
        .await
        .unwrap_err();
    assert!(matches!(e, SearchError::Transient(_)), "{e}");
    assert_eq!(
        sim.count_requests("POST", "/inquiries/search"),
        4,
        "one call per refusal, the 500 tried twice"
    );
    // With the fault gone the same call succeeds.
    assert!(
        persona
            .search_all_updated_since(&tid, since)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn searches_count_against_the_rate_limit_like_every_call() {
    let sim = start_sim(|c| c.rate_limit_per_minute = Some(3)).await;
    let api = Api::new(&sim);
    let first = api.post("/inquiries/search", None, None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("ratelimit-remaining"), Some("2"));
    assert_eq!(api.get("/inquiries").await.status, 200);
    assert_eq!(api.post("/inquiries/search", None, None).await.status, 200);
    assert_eq!(api.post("/inquiries/search", None, None).await.status, 429);
    assert_eq!(sim.count_requests("POST", "/inquiries/search"), 3);
}

#[tokio::test]
async fn fresh_reads_by_id_take_a_hundred_ids_per_call() {
    let sim = start_sim(|_| {}).await;
    let api = Api::new(&sim);
    let t = template(&sim);
    let mut ids = Vec::new();
    for i in 0..150 {
        ids.push(InquiryId::parse(&create(&api, &t, &format!("user-{i}")).await).unwrap());
    }
    sim.act(ids[7].as_str(), Action::Complete).unwrap();
    let persona = client(&sim, 0);
    sim.clear_requests();

    let mut asked = ids.clone();
    asked.push(ids[0].clone());
    let read = persona.inquiries_by_id(&asked).await.unwrap();
    let got: BTreeSet<&str> = read.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(got, ids.iter().map(InquiryId::as_str).collect());
    assert_eq!(read.len(), 150, "a repeated id is read once");
    let seventh = read.iter().find(|i| i.id == ids[7]).unwrap();
    assert_eq!(seventh.status, InquiryStatus::Completed, "no lag on a list");
    assert_eq!(sim.count_requests("GET", "/inquiries"), 2);
    assert!(persona.inquiries_by_id(&[]).await.unwrap().is_empty());
    assert_eq!(
        sim.count_requests("GET", "/inquiries"),
        2,
        "no ids, no call"
    );

    // Persona's limit is 100 ids per filter.
    let over: Vec<&str> = ids.iter().take(101).map(InquiryId::as_str).collect();
    let r = api
        .get(&format!(
            "/inquiries?filter%5Binquiry-id%5D={}&page%5Bsize%5D=100",
            over.join(",")
        ))
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let ok = &over[..100].join(",");
    let r = api
        .get(&format!(
            "/inquiries?filter%5Binquiry-id%5D={ok}&page%5Bsize%5D=100"
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(ids_of(&r.body).len(), 100);
}

#[tokio::test]
async fn a_change_between_two_pages_makes_the_client_skip_nothing() {
    let sim = start_sim(|c| c.switches.search_lag_seconds = 0).await;
    let api = Api::new(&sim);
    let t = template(&sim);
    let mut created = Vec::new();
    for i in 0..150 {
        created.push(create(&api, &t, &format!("user-{i}")).await);
        sim.advance_clock(Duration::from_millis(5));
    }
    let since = sim.clock().now() - chrono::Duration::hours(1);
    let persona = client(&sim, 0);
    let mut pages = persona.search_updated_since(&TemplateId::parse(&t).unwrap(), since);
    let first = pages.next_page().await.unwrap().unwrap();
    assert_eq!(first.len(), 100);
    // The cursor inquiry (last of the page) changes before the next page is asked for.
    sim.act(first[99].id.as_str(), Action::Complete).unwrap();
    let second = pages.next_page().await.unwrap().unwrap();
    assert!(pages.next_page().await.unwrap().is_none());
    let got: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|i| i.id.as_str().to_owned())
        .collect();
    assert_eq!(got, created);

    // Why the client sorts by creation: by updated_at the cursor moves with its inquiry, and
    // the page after it starts where it sorts now.
    let by_update =
        json!({"sort": {"attribute": "updated_at", "direction": "asc"}, "page": {"size": 10}});
    let page = search(&api, by_update.clone()).await;
    let cursor = ids_of(&page)[9].clone();
    sim.act(&cursor, Action::Start).unwrap();
    let after = search_at(
        &api,
        &format!("/inquiries/search?page%5Bafter%5D={cursor}"),
        by_update,
    )
    .await;
    assert!(ids_of(&after).is_empty(), "the cursor now sorts last");
}
