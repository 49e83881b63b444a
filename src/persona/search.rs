//! `POST /inquiries/search` for "which inquiries of a template changed since X". Persona's
//! search trails the live data by about a minute and may be refused for a key, so its answers
//! only say what may have changed: decide on a fresh read (`inquiries_by_id`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use url::Url;

use super::PersonaClient;
use super::error::PersonaError;
use super::list::resolve_next;
use super::model::{Inquiry, read_page};
use super::transport::{Call, Verb};
use crate::domain::TemplateId;

/// Persona's largest search page.
const PAGE_SIZE: u32 = 100;

/// A search that did not give an answer, classified by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Persona will not search for this key (403, 404) or does not take the query (400, 422):
    /// asking again will not help; list instead.
    #[error("Persona refused the inquiry search: {0}")]
    Refused(#[source] PersonaError),
    /// 408, 429, 5xx or no answer, after the client's own retries: try again next run.
    #[error("inquiry search failed for now: {0}")]
    Transient(#[source] PersonaError),
    /// Anything else (bad credentials, an answer the client cannot read).
    #[error("inquiry search failed: {0}")]
    Failed(#[source] PersonaError),
}

impl SearchError {
    fn classify(e: PersonaError) -> Self {
        match e.status() {
            _ if e.is_transient() => Self::Transient(e),
            Some(400 | 403 | 404 | 422) if matches!(e, PersonaError::Api { .. }) => {
                Self::Refused(e)
            }
            _ => Self::Failed(e),
        }
    }

    /// The call's own error, whatever the class.
    pub fn persona_error(&self) -> &PersonaError {
        match self {
            Self::Refused(e) | Self::Transient(e) | Self::Failed(e) => e,
        }
    }
}

/// The body of "inquiries of `template` updated at or after `since`". Sorted by creation: a
/// cursor is an inquiry id, and only an attribute that never changes keeps its place fixed
/// while inquiries change between two pages (by `updated_at`, a moved cursor skips others).
fn updated_since_body(template: &TemplateId, since: DateTime<Utc>) -> Value {
    // Persona's timestamps have milliseconds; truncating keeps `gte` inclusive of `since`.
    let since = since.to_rfc3339_opts(SecondsFormat::Millis, true);
    json!({
        "query": { "and": [
            { "attribute": "inquiry_template_id", "operator": "eq", "value": template.as_str() },
            { "attribute": "updated_at", "operator": "gte", "value": since },
        ]},
        "sort": { "attribute": "created_at", "direction": "asc" },
        "page": { "size": PAGE_SIZE },
    })
}

/// The pages of one search, fetched one `next_page` at a time: each is the same body POSTed to
/// the previous page's `links.next`, as the spec prescribes.
pub struct SearchPages {
    client: PersonaClient,
    body: Value,
    /// The URL of the next page; `None` once the last page was read.
    next: Option<Url>,
}

impl SearchPages {
    pub(crate) fn new(client: PersonaClient, body: Value) -> Self {
        let first = client.transport().url("/inquiries/search");
        Self {
            client,
            body,
            next: Some(first),
        }
    }

    /// The next page, or `None` once every page was read. After an error the same page is
    /// asked for again on the next call.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Inquiry>>, SearchError> {
        let Some(url) = self.next.clone() else {
            return Ok(None);
        };
        let call = Call {
            endpoint: "search_inquiries",
            verb: Verb::Post,
            url: url.clone(),
            body: Some(self.body.clone()),
            // A read: repeating it changes nothing, so no key is needed.
            idempotency_key: None,
        };
        let (inquiries, next) = self
            .client
            .transport()
            .send(&call, |body| {
                let page = read_page(body)?;
                let next = page
                    .next
                    .as_deref()
                    .map(|n| resolve_next(&url, n, &[]))
                    .transpose()?;
                Ok((page.inquiries, next))
            })
            .await
            .map_err(SearchError::classify)?;
        self.next = next;
        Ok(Some(inquiries))
    }
}

impl PersonaClient {
    /// Inquiries of `template` whose `updated_at` is at or after `since` in Persona's search
    /// index, a page (100) at a time, oldest created first. The index lags: look back further.
    pub fn search_updated_since(&self, template: &TemplateId, since: DateTime<Utc>) -> SearchPages {
        SearchPages::new(self.clone(), updated_since_body(template, since))
    }

    /// [`Self::search_updated_since`] with every page read.
    pub async fn search_all_updated_since(
        &self,
        template: &TemplateId,
        since: DateTime<Utc>,
    ) -> Result<Vec<Inquiry>, SearchError> {
        let mut pages = self.search_updated_since(template, since);
        let mut all = Vec::new();
        while let Some(page) = pages.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> PersonaError {
        PersonaError::Api {
            method: "POST",
            path: "/inquiries/search".into(),
            status,
            errors: vec![],
            request_id: None,
        }
    }

    #[test]
    fn errors_are_classified_by_what_the_caller_does_next() {
        for refused in [400, 403, 404, 422] {
            assert!(
                matches!(SearchError::classify(api(refused)), SearchError::Refused(_)),
                "{refused}"
            );
        }
        for transient in [408, 429, 500, 503] {
            assert!(
                matches!(
                    SearchError::classify(api(transient)),
                    SearchError::Transient(_)
                ),
                "{transient}"
            );
        }
        for failed in [401, 409] {
            assert!(
                matches!(SearchError::classify(api(failed)), SearchError::Failed(_)),
                "{failed}"
            );
        }
        let malformed = PersonaError::Malformed {
            method: "POST",
            path: "/inquiries/search".into(),
            status: 200,
            what: "data is missing".into(),
        };
        assert!(matches!(
            SearchError::classify(malformed),
            SearchError::Failed(_)
        ));
    }

    #[test]
    fn the_body_asks_for_one_template_since_a_moment_in_creation_order() {
        let template = TemplateId::parse("itmpl_A").unwrap();
        let since = "2026-03-01T10:00:00.123456Z".parse().unwrap();
        let body = updated_since_body(&template, since);
        assert_eq!(
            body["query"]["and"][1],
            json!({"attribute": "updated_at", "operator": "gte", "value": "2026-03-01T10:00:00.123Z"})
        );
        assert_eq!(body["query"]["and"][0]["value"], "itmpl_A");
        assert_eq!(
            body["sort"],
            json!({"attribute": "created_at", "direction": "asc"})
        );
    }
}
