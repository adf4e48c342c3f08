//! Sample operations for the demo and the bench: realistic, varied, valid.

use trustlog_guest::model::{Micros, Operation};

/// Sample operation `i` of run `run`: realistic field sizes, ten per timestamp from `base`.
pub fn operation(run: &str, i: u32, base: Micros) -> Operation {
    let kinds = ["Create", "Update", "Delete", "Retrieve"];
    Operation {
        op_id: format!("{run}-{i:07}"),
        op_actor: format!("user-{}", i % 7),
        doid: format!("10.1000/demo.{i}"),
        producer_id: "demo-producer".into(),
        request_body_hash: Some(trustlog_guest::envelope::sha256_hex(
            format!("request {i}").as_bytes(),
        )),
        response_body_hash: (!i.is_multiple_of(3))
            .then(|| trustlog_guest::envelope::sha256_hex(format!("response {i}").as_bytes())),
        op_source: if i.is_multiple_of(2) {
            "IRP".into()
        } else {
            "DOIP".into()
        },
        op_type: kinds[(i % 4) as usize].into(),
        do_prefix: "10.1000".into(),
        do_repository: "demo-repository".into(),
        client_ip: Some(format!("192.0.2.{}", i % 250 + 1)),
        server_ip: (!i.is_multiple_of(5)).then(|| "198.51.100.7".into()),
        // Ten operations share each timestamp: the cursor must not lose or repeat them.
        timestamp: base + i64::from(i / 10),
    }
}
