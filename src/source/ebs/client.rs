//! The EBS direct APIs over HTTPS: GET requests signed with SigV4 (service
//! `ebs`), retried with backoff when EBS throttles, fails with 5xx or the
//! network fails, and error answers turned into one clear [`Error`].

use super::listing::{BlockList, Pages};
use super::{EbsConfig, Error};
use crate::block::Hash;
use crate::net::http;
use crate::retry::{Backoff, Jitter};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::time::{Duration, SystemTime};

/// Waits between attempts of one request: equal jitter under a ceiling of
/// 200 ms, 400 ms, ... up to 10 s (the first wait is 100 to 200 ms).
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(200),
    cap: Duration::from_secs(10),
    jitter: Jitter::Equal,
};

/// A signed client of one snapshot's endpoint.
pub(super) struct Client {
    pub cfg: EbsConfig,
    http: reqwest::blocking::Client,
}

impl Client {
    /// Builds the HTTPS client (rustls on ring, webpki roots); makes no request yet.
    pub fn new(cfg: EbsConfig) -> Result<Self, Error> {
        let http = http::client(http::Settings {
            proxy: cfg.proxy.as_deref(),
            tls: http::Tls::WebPki,
            connect_timeout: Duration::from_secs(10).min(cfg.timeout),
            timeout: cfg.timeout,
        })
        .map_err(|message| Error::Transport {
            endpoint: cfg.endpoint.clone(),
            what: "HTTP client setup".into(),
            message,
        })?;
        Ok(Self { cfg, http })
    }

    /// How far the local clock is from EBS's, in seconds (positive: we are
    /// behind), from the `Date` of the endpoint's answer to an unsigned HEAD of
    /// its root (through the proxy, if any): the same roots as every request, but
    /// the certificate's dates are not held against the local clock, the very
    /// thing this asks about.
    pub fn date_offset(&self) -> Result<f64, Error> {
        let url = format!("{}/", self.cfg.endpoint);
        let offset = crate::net::clock::http_date(
            &url,
            self.cfg.proxy.as_deref(),
            crate::net::cert_time::webpki_roots(),
            Duration::from_secs(15).min(self.cfg.timeout),
        )?;
        Ok(offset)
    }

    /// The endpoint's host name, as its certificate must name it.
    fn host(&self) -> String {
        reqwest::Url::parse(&self.cfg.endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| self.cfg.endpoint.clone())
    }

    /// The pages of ListSnapshotBlocks (`base` = None) or ListChangedBlocks (the
    /// changes since `base`) of the snapshot over API blocks `range`, from its
    /// StartingBlockIndex to the first block past it. A NextToken that expired
    /// (they last an hour) is replaced by a StartingBlockIndex past the last
    /// block listed.
    pub fn list(&self, base: Option<&str>, range: Range<u64>) -> Result<BlockList, Error> {
        let snap = &self.cfg.snapshot;
        let what = match base {
            None => format!("ListSnapshotBlocks {snap}"),
            Some(b) => format!("ListChangedBlocks {b} -> {snap}"),
        };
        let path = match base {
            None => format!("/snapshots/{}/blocks", encode(snap)),
            Some(_) => format!("/snapshots/{}/changedblocks", encode(snap)),
        };
        // The API takes 100 to 10000 results a page.
        let max_results = (range.end - range.start).clamp(100, 10000);
        let mut pages = Pages::new(snap, range);
        let mut token: Option<String> = None;
        let mut renewed = 0;
        loop {
            let mut query = vec![("maxResults", max_results.to_string())];
            if let Some(b) = base {
                query.push(("firstSnapshotId", b.to_string()));
            }
            match &token {
                Some(t) => query.push(("pageToken", t.clone())),
                None => query.push(("startingBlockIndex", pages.resume_at().to_string())),
            }
            let resp = match self.request(&what, &path, &query) {
                Err(Error::TokenExpired { .. }) if token.is_some() && renewed < 3 => {
                    renewed += 1;
                    token = None;
                    continue;
                }
                r => r?,
            };
            let body = resp.bytes().map_err(|e| self.transport(&what, e))?;
            match pages.add(&what, &body)? {
                Some(next) => token = Some(next),
                None => return pages.finish(&what),
            }
        }
    }

    /// The BlockSize and VolumeSize (GiB) of `snapshot`, from the first page of
    /// its ListSnapshotBlocks (ListChangedBlocks does not say whose size it gives).
    pub fn first_page(&self, snapshot: &str) -> Result<(u64, u64), Error> {
        let what = format!("ListSnapshotBlocks {snapshot}");
        let path = format!("/snapshots/{}/blocks", encode(snapshot));
        let resp = self.request(&what, &path, &[("maxResults", "100".to_string())])?;
        let body = resp.bytes().map_err(|e| self.transport(&what, e))?;
        let mut pages = Pages::new(snapshot, 0..0);
        pages.add(&what, &body)?;
        let list = pages.finish(&what)?;
        Ok((list.block_size, list.volume_gib))
    }

    /// GetSnapshotBlock, checked against x-amz-Data-Length and x-amz-Checksum.
    /// Gives the data and its SHA-256 (the checksum it matched).
    pub fn block(
        &self,
        index: u64,
        token: &str,
        block_size: u64,
    ) -> Result<(Vec<u8>, Hash), Error> {
        let snap = &self.cfg.snapshot;
        let what = format!("GetSnapshotBlock {snap} {index}");
        let path = format!("/snapshots/{}/blocks/{index}", encode(snap));
        let refetch = |e: &Error| matches!(e, Error::Checksum { .. } | Error::Length { .. });
        BACKOFF.retry(self.cfg.attempts, refetch, || {
            let resp = self.request(&what, &path, &[("blockToken", token.to_string())])?;
            let header = |k: &str| {
                resp.headers()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let headers = BlockHeaders {
                length: header("x-amz-Data-Length"),
                checksum: header("x-amz-Checksum"),
                algorithm: header("x-amz-Checksum-Algorithm"),
            };
            let data = resp.bytes().map_err(|e| self.transport(&what, e))?;
            let sha = check_block(snap, index, block_size, &headers, &data)?;
            Ok((data.into(), sha))
        })
    }

    /// Signs and sends a GET, retrying throttling, 5xx and network errors.
    fn request(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::blocking::Response, Error> {
        let mut url = format!("{}{}", self.cfg.endpoint, path);
        for (k, (name, value)) in query.iter().enumerate() {
            url.push(if k == 0 { '?' } else { '&' });
            url.push_str(name);
            url.push('=');
            url.push_str(&encode(value));
        }
        BACKOFF.retry(self.cfg.attempts, Error::is_retryable, || {
            self.send_once(what, &url)
        })
    }

    fn send_once(&self, what: &str, url: &str) -> Result<reqwest::blocking::Response, Error> {
        let mut req = self.http.get(url);
        for (k, v) in self.sign("GET", url)? {
            req = req.header(k, v);
        }
        let resp = req.send().map_err(|e| self.transport(what, e))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let kind_header = resp
            .headers()
            .get("x-amzn-ErrorType")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().unwrap_or_default();
        Err(Error::from_answer(
            &self.cfg,
            what,
            status,
            kind_header,
            &body,
        ))
    }

    /// SigV4 headers for a bodiless request (service `ebs`).
    fn sign(&self, method: &str, url: &str) -> Result<Vec<(String, String)>, Error> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let c = &self.cfg.credentials;
        let identity = aws_credential_types::Credentials::new(
            &c.access_key_id,
            &c.secret_access_key,
            c.session_token.clone(),
            None,
            "failback",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.cfg.region)
            .name("ebs")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Error::Sign(e.to_string()))?
            .into();
        let request =
            SignableRequest::new(method, url, std::iter::empty(), SignableBody::Bytes(&[]))
                .map_err(|e| Error::Sign(e.to_string()))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| Error::Sign(e.to_string()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// A network error, without the URL (its query holds block tokens).
    fn transport(&self, what: &str, e: reqwest::Error) -> Error {
        let e = e.without_url();
        if let Some(line) = crate::net::cert_time::wrong_clock(&e, &self.host()) {
            return Error::Clock(line);
        }
        let message = http::describe(&e, self.cfg.proxy.as_deref());
        Error::Transport {
            endpoint: self.cfg.endpoint.clone(),
            what: what.into(),
            message,
        }
    }
}

/// The headers of a GetSnapshotBlock answer that vouch for its data.
#[derive(Debug, Default)]
pub(super) struct BlockHeaders {
    pub length: Option<String>,
    pub checksum: Option<String>,
    pub algorithm: Option<String>,
}

/// Checks block `index` of `snapshot` against its headers and the block size;
/// gives its SHA-256 (the checksum it matched).
pub(super) fn check_block(
    snapshot: &str,
    index: u64,
    block_size: u64,
    headers: &BlockHeaders,
    data: &[u8],
) -> Result<Hash, Error> {
    let length = headers
        .length
        .as_deref()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let sha: Hash = Sha256::digest(data).into();
    if length != Some(data.len() as u64) || data.len() as u64 != block_size {
        Err(Error::Length {
            snapshot: snapshot.to_string(),
            index,
            got: data.len(),
            header: length,
            block_size,
        })
    } else if headers
        .algorithm
        .as_deref()
        .is_some_and(|a| !a.eq_ignore_ascii_case("SHA256"))
        || headers.checksum.as_deref().and_then(decode_sha256) != Some(sha)
    {
        Err(Error::Checksum {
            snapshot: snapshot.to_string(),
            index,
        })
    } else {
        Ok(sha)
    }
}

/// URI-encodes a path segment or query value the SigV4 way (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push_str(&hex::encode_upper([b]));
        }
    }
    out
}

fn decode_sha256(b64: &str) -> Option<Hash> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded_for_sigv4() {
        assert_eq!(encode("AAUB+a/b=="), "AAUB%2Ba%2Fb%3D%3D");
        assert_eq!(encode("snap-0aZ_~."), "snap-0aZ_~.");
    }
}
