//! Optional TLS on the front door: HTTPS with the configured certificate, a renewed
//! certificate served after SIGHUP without a restart, and a renewal whose key does not match
//! its certificate refused (the running one stays).

use std::time::Duration;

use crate::helpers::*;

fn self_signed(dir: &std::path::Path) -> String {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = generated.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem).unwrap();
    std::fs::write(dir.join("key.pem"), generated.key_pair.serialize_pem()).unwrap();
    pem
}

fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[actix_web::test]
async fn https_with_the_configured_certificate_and_renewal_on_sighup_but_not_a_mismatched_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = self_signed(dir.path());
    let cert = dir.path().join("cert.pem").display().to_string();
    let key = dir.path().join("key.pem").display().to_string();
    let child = spawn_binary(
        dir.path(),
        &[
            ("APPROVAL_GATE__SERVER__TLS__CERT", cert.as_str()),
            ("APPROVAL_GATE__SERVER__TLS__KEY", key.as_str()),
        ],
    );
    let port = child.address.rsplit(':').next().unwrap().to_string();
    let https = format!("https://localhost:{port}/health/ready");
    let response = trusting(&first)
        .get(&https)
        .send()
        .await
        .expect("https works");
    assert!(response.status().is_success());
    // Under TLS the console's session cookie is `Secure` (docs/console.md).
    let signed_in = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(first.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("https://localhost:{port}/console/sign-in"))
        .form(&[("token", OPERATOR_TOKEN)])
        .send()
        .await
        .expect("sign in over https");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap_or_default();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let plain = client()
        .get(format!("http://127.0.0.1:{port}/health/ready"))
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP is not served"
    );

    // A renewed certificate (new key) at the same paths, then SIGHUP.
    let second = self_signed(dir.path());
    child.signal(libc::SIGHUP);
    let renewed = trusting(&second);
    eventually(
        Duration::from_secs(10),
        "the renewed certificate served",
        || async {
            renewed
                .get(&https)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        },
    )
    .await;
    let old_client = trusting(&first).get(&https).send().await;
    assert!(
        old_client.is_err(),
        "the old certificate is no longer served"
    );

    // A certificate renewed without its key (the old key stays at key.pem): the reload is
    // refused and the running certificate stays.
    let mismatched = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), mismatched.cert.pem()).unwrap();
    child.signal(libc::SIGHUP);
    let metrics = format!("https://localhost:{port}/metrics");
    eventually(Duration::from_secs(10), "the reload rejected", || async {
        let text = renewed.get(&metrics).send().await.ok()?.text().await.ok()?;
        (metric(
            &text,
            "approval_gate_config_reloads_total{outcome=\"rejected\"}",
        )? >= 1.0)
            .then_some(())
    })
    .await;
    let still = renewed.get(&https).send().await.expect("still served");
    assert!(still.status().is_success());
    eventually(Duration::from_secs(10), "the rejection logged", || async {
        let logs = child.logs.lock().unwrap().clone();
        logs.contains("does not belong to the certificate")
            .then_some(())
    })
    .await;
}
