//! The HTTPS proxy (`failback.proxy=`, the preset's `proxy`, `--proxy`,
//! HTTPS_PROXY): every outbound HTTPS request goes through it with CONNECT.

/// The proxy from the environment (HTTPS_PROXY, then https_proxy), for the CLI.
pub fn from_env() -> Option<String> {
    ["HTTPS_PROXY", "https_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Checks a proxy URL: `http://HOST:PORT` (or `https://`), user:password allowed.
pub fn check(url: &str) -> Result<(), String> {
    let ok = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "proxy {:?} is not a proxy URL: use http://HOST:PORT",
            redact(url)
        ))
    }
}

/// Sends HTTPS requests of `builder` through `proxy`, or through no proxy at
/// all (the environment is read by the caller, never implicitly).
pub fn configure(
    builder: reqwest::blocking::ClientBuilder,
    proxy: Option<&str>,
) -> Result<reqwest::blocking::ClientBuilder, String> {
    let Some(url) = proxy else {
        return Ok(builder.no_proxy());
    };
    check(url)?;
    let p = reqwest::Proxy::https(url)
        .map_err(|e| crate::secret::redact_urls(&format!("proxy {:?}: {e}", redact(url))))?
        .no_proxy(reqwest::NoProxy::from_env());
    Ok(builder.proxy(p))
}

/// A one-line explanation when a request failed because the proxy itself
/// could not be reached (`chain` is the error with its causes), else `None`.
/// Through a proxy every TCP connection goes to the proxy, so a connect
/// failure that is not a refused tunnel is the proxy's.
pub fn unreachable(proxy: Option<&str>, chain: &str) -> Option<String> {
    let proxy = proxy?;
    // hyper-util's tunnel says "failed to create underlying connection" when
    // the proxy is not reached, "unsuccessful tunnel" when it refused the CONNECT.
    let connect = chain.contains("failed to create underlying connection")
        || chain.contains("tcp connect error")
        || chain.contains("dns error");
    if !connect || chain.contains("unsuccessful tunnel") {
        return None;
    }
    let cause = chain.rsplit(": ").next().unwrap_or(chain);
    Some(format!(
        "cannot reach the HTTPS proxy {}: {cause}; check failback.proxy= (or --proxy / HTTPS_PROXY)",
        redact(proxy)
    ))
}

/// The proxy URL without a password.
pub fn redact(url: &str) -> String {
    crate::secret::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_checked() {
        assert!(check("http://proxy:3128").is_ok());
        assert!(check("https://proxy:3128").is_ok());
        assert!(
            check("proxy:3128")
                .unwrap_err()
                .contains("http://HOST:PORT")
        );
        assert!(check("http://").is_err());
    }

    #[test]
    fn a_malformed_proxy_url_is_refused_without_its_password() {
        for url in ["bob:hunter2@proxy:3128", "ftp://bob:hunter2@proxy:3128"] {
            let err = check(url).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("bob:***@proxy:3128"), "{err}");
        }
        let builder = reqwest::blocking::Client::builder();
        let err = configure(builder, Some("http://bob:hunter2@[::1")).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn an_unreachable_proxy_is_named_without_its_password() {
        // As reqwest 0.12 reports it.
        let chain = "error sending request for url (https://10.0.0.1:8443/v1/volumes): client error (Connect): tunnel error: failed to create underlying connection: tcp connect error: Connection refused (os error 111)";
        assert_eq!(
            unreachable(Some("http://u:secret@127.0.0.1:9"), chain).unwrap(),
            "cannot reach the HTTPS proxy http://u:***@127.0.0.1:9: Connection refused (os error 111); check failback.proxy= (or --proxy / HTTPS_PROXY)"
        );
        assert_eq!(unreachable(None, chain), None, "no proxy: not its fault");
        let tunnel =
            "error sending request: client error (Connect): tunnel error: unsuccessful tunnel";
        assert_eq!(unreachable(Some("http://p:1"), tunnel), None);
    }
}
