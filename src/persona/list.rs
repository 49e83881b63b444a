//! `GET /inquiries`: filters, and a cursor that follows Persona's relative `links.next` page
//! by page, so a caller can handle thousands of inquiries without holding them all.

use std::collections::{HashSet, VecDeque};

use url::Url;

use super::PersonaClient;
use super::error::PersonaError;
use super::model::{Inquiry, read_page};
use super::transport::{Call, Verb};
use crate::domain::{InquiryId, InquiryStatus, ReferenceId, TemplateId};

/// Persona's largest page, and its limit on ids in one `filter[inquiry-id]`.
const PAGE_SIZE: usize = 100;
const IDS_PER_FILTER: usize = 100;

/// Which inquiries to list. Empty means "no filter on this".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub reference_id: Option<ReferenceId>,
    pub statuses: Vec<InquiryStatus>,
    pub template_id: Option<TemplateId>,
    /// Any number: more than 100 are listed in several passes of 100.
    pub inquiry_ids: Vec<InquiryId>,
    /// `filter[note]`, which Persona allows only alone: the other filters are then applied to
    /// each page here instead of being sent.
    pub note: Option<String>,
}

type Query = Vec<(String, String)>;

impl ListFilter {
    /// One query per pass; one pass unless there are more than 100 inquiry ids.
    fn queries(&self) -> VecDeque<Query> {
        if let Some(note) = &self.note {
            return VecDeque::from([vec![
                ("filter[note]".into(), note.clone()),
                ("page[size]".into(), PAGE_SIZE.to_string()),
            ]]);
        }
        let mut common: Query = Vec::new();
        if let Some(r) = &self.reference_id {
            common.push(("filter[reference-id]".into(), r.as_str().into()));
        }
        if !self.statuses.is_empty() {
            let list: Vec<&str> = self.statuses.iter().map(InquiryStatus::as_str).collect();
            common.push(("filter[status]".into(), list.join(",")));
        }
        if let Some(t) = &self.template_id {
            common.push(("filter[inquiry-template-id]".into(), t.as_str().into()));
        }
        common.push(("page[size]".into(), PAGE_SIZE.to_string()));
        if self.inquiry_ids.is_empty() {
            return VecDeque::from([common]);
        }
        self.inquiry_ids
            .chunks(IDS_PER_FILTER)
            .map(|chunk| {
                let ids: Vec<&str> = chunk.iter().map(InquiryId::as_str).collect();
                let mut q = common.clone();
                q.push(("filter[inquiry-id]".into(), ids.join(",")));
                q
            })
            .collect()
    }
}

/// Pages of `GET /inquiries`, newest first, fetched one `next_page` at a time.
pub struct InquiryPages {
    client: PersonaClient,
    /// Passes not started yet.
    passes: VecDeque<Query>,
    /// The next page of the current pass, and that pass's query.
    next: Option<(Url, Query)>,
    /// Filters applied to each page here, for a listing by note (which must be Persona's only filter).
    local: Option<ListFilter>,
}

impl InquiryPages {
    pub(crate) fn new(client: PersonaClient, filter: &ListFilter) -> Self {
        Self {
            client,
            passes: filter.queries(),
            next: None,
            local: filter.note.is_some().then(|| filter.clone()),
        }
    }

    /// The next page, or `None` once every page was read. After an error the same page is
    /// asked for again on the next call.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Inquiry>>, PersonaError> {
        let (url, query) = match &self.next {
            Some(next) => next.clone(),
            None => match self.passes.front() {
                None => return Ok(None),
                Some(query) => {
                    let mut url = self.client.transport().url("/inquiries");
                    url.query_pairs_mut().extend_pairs(query.iter());
                    (url, query.clone())
                }
            },
        };
        let transport = self.client.transport();
        let call = Call {
            endpoint: "list_inquiries",
            verb: Verb::Get,
            url: url.clone(),
            body: None,
            idempotency_key: None,
        };
        let page = transport
            .send(&call, |body| {
                let page = read_page(body)?;
                let next = page
                    .next
                    .as_deref()
                    .map(|n| resolve_next(&url, n, &query))
                    .transpose()?;
                Ok((page.inquiries, next))
            })
            .await?;
        let (inquiries, next) = page;
        if self.next.is_none() {
            self.passes.pop_front();
        }
        self.next = next.map(|n| (n, query));
        Ok(Some(match &self.local {
            None => inquiries,
            Some(f) => inquiries.into_iter().filter(|i| f.matches(i)).collect(),
        }))
    }
}

impl PersonaClient {
    /// A fresh read of these inquiries by `filter[inquiry-id]`, 100 ids per call; ids Persona
    /// does not know are simply absent from the answer. No ids, no call.
    pub async fn inquiries_by_id(&self, ids: &[InquiryId]) -> Result<Vec<Inquiry>, PersonaError> {
        let mut unique = Vec::with_capacity(ids.len());
        let mut seen = HashSet::with_capacity(ids.len());
        for id in ids {
            if seen.insert(id) {
                unique.push(id.clone());
            }
        }
        if unique.is_empty() {
            // An empty filter would list every inquiry.
            return Ok(Vec::new());
        }
        let filter = ListFilter {
            inquiry_ids: unique,
            ..ListFilter::default()
        };
        self.list_inquiries(&filter).await
    }
}

impl ListFilter {
    /// Whether `inquiry` passes every filter but the note.
    fn matches(&self, inquiry: &Inquiry) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&inquiry.status))
            && self
                .template_id
                .as_ref()
                .is_none_or(|t| inquiry.template_id.as_ref() == Some(t))
            && self
                .reference_id
                .as_ref()
                .is_none_or(|r| inquiry.reference_id.as_deref() == Some(r.as_str()))
            && (self.inquiry_ids.is_empty() || self.inquiry_ids.contains(&inquiry.id))
    }
}

/// Resolves Persona's `links.next` (a path such as `/api/v1/inquiries?page%5Bafter%5D=inq_…`)
/// against the page just read. Persona's example links carry only the cursor, so any filter
/// or page size of ours the link lacks is added back; a link to another host is refused, as
/// following it would send the API key there.
pub(super) fn resolve_next(
    current: &Url,
    next: &str,
    query: &[(String, String)],
) -> Result<Url, String> {
    let mut resolved = current
        .join(next)
        .map_err(|e| format!("links.next {next:?} is not a usable link ({e})"))?;
    if resolved.origin() != current.origin() {
        return Err(format!("links.next {next:?} points at another host"));
    }
    let present: HashSet<String> = resolved
        .query_pairs()
        .map(|(k, _)| k.into_owned())
        .collect();
    let missing: Vec<&(String, String)> =
        query.iter().filter(|(k, _)| !present.contains(k)).collect();
    if !missing.is_empty() {
        resolved.query_pairs_mut().extend_pairs(missing);
    }
    if resolved == *current {
        return Err(format!("links.next {next:?} points at the page just read"));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_of(url: &Url) -> Vec<(String, String)> {
        url.query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    }

    #[test]
    fn filters_become_persona_query_parameters() {
        let filter = ListFilter {
            reference_id: Some(ReferenceId::parse("ref_abc").unwrap()),
            statuses: vec![InquiryStatus::Created, InquiryStatus::Pending],
            template_id: Some(TemplateId::parse("itmpl_x").unwrap()),
            inquiry_ids: vec![],
            note: None,
        };
        let q = filter.queries();
        assert_eq!(q.len(), 1);
        assert_eq!(
            q[0],
            vec![
                ("filter[reference-id]".to_owned(), "ref_abc".to_owned()),
                ("filter[status]".to_owned(), "created,pending".to_owned()),
                (
                    "filter[inquiry-template-id]".to_owned(),
                    "itmpl_x".to_owned()
                ),
                ("page[size]".to_owned(), "100".to_owned()),
            ]
        );
    }

    #[test]
    fn more_than_a_hundred_ids_are_split_into_passes() {
        let ids: Vec<InquiryId> = (0..250)
            .map(|i| InquiryId::parse(&format!("inq_{i}")).unwrap())
            .collect();
        let filter = ListFilter {
            inquiry_ids: ids,
            ..ListFilter::default()
        };
        let passes = filter.queries();
        let sizes: Vec<usize> = passes
            .iter()
            .map(|q| {
                let (_, ids) = q.iter().find(|(k, _)| k == "filter[inquiry-id]").unwrap();
                ids.split(',').count()
            })
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }

    #[test]
    fn next_links_resolve_against_the_origin_and_keep_our_filters() {
        let query: Query = vec![
            ("filter[status]".into(), "created".into()),
            ("page[size]".into(), "100".into()),
        ];
        let current = Url::parse(
            "http://127.0.0.1:9/api/v1/inquiries?filter%5Bstatus%5D=created&page%5Bsize%5D=100",
        )
        .unwrap();
        let next =
            resolve_next(&current, "/api/v1/inquiries?page%5Bafter%5D=inq_B", &query).unwrap();
        assert_eq!(next.path(), "/api/v1/inquiries");
        assert_eq!(next.host_str(), Some("127.0.0.1"));
        assert_eq!(
            query_of(&next),
            vec![
                ("page[after]".to_owned(), "inq_B".to_owned()),
                ("filter[status]".to_owned(), "created".to_owned()),
                ("page[size]".to_owned(), "100".to_owned()),
            ]
        );
        // A link that already carries them is not given duplicates.
        let full =
            "/api/v1/inquiries?filter%5Bstatus%5D=created&page%5Bsize%5D=100&page%5Bafter%5D=inq_C";
        assert_eq!(
            query_of(&resolve_next(&current, full, &query).unwrap()).len(),
            3
        );
    }

    #[test]
    fn next_links_to_other_hosts_or_the_same_page_are_refused() {
        let current = Url::parse("http://127.0.0.1:9/api/v1/inquiries?page%5Bsize%5D=100").unwrap();
        let query: Query = vec![("page[size]".into(), "100".into())];
        assert!(resolve_next(&current, "https://evil.example/api/v1/inquiries", &query).is_err());
        assert!(resolve_next(&current, "/api/v1/inquiries?page%5Bsize%5D=100", &query).is_err());
    }
}
