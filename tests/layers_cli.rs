//! `pageserver layers list | dump | index-part | verify` on a real workdir and a real S3 server (SeaweedFS,
//! which checks signatures): what the tools print agrees with the pageserver's API and files, and verify
//! finds one flipped byte in a layer object and in a WAL archive object of the bucket.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use pageserver::config::RemoteStorageConfig;
use pageserver::pg::Lsn;
use pageserver::remote_storage::{ByteRange, GenericRemoteStorage, ListingMode, RemotePath};
use support::objstore::S3Server;
use support::pageserver::{Pageserver, binary};

const T: &str = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";
const TL: &str = "8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b";

fn layers(args: &[&str], env: &[(String, String)]) -> (Output, String) {
    let out = Command::new(binary())
        .arg("layers")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run pageserver layers");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The names in a `layers list` table (its last column), without the header and total lines.
fn listed(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| l.starts_with("image ") || l.starts_with("delta "))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[cols.len() - 1].to_string(), cols[4].to_string())
        })
        .collect()
}

struct Bucket {
    rt: tokio::runtime::Runtime,
    storage: GenericRemoteStorage,
}

impl Bucket {
    fn open(table: &str, s3: &S3Server) -> Bucket {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let doc: toml::Table = toml::from_str(&format!("rs = {table}")).unwrap();
        let config: RemoteStorageConfig = doc["rs"].clone().try_into().unwrap();
        let creds = pageserver::remote_storage::StaticCredentials {
            access_key: s3.access_key.clone(),
            secret_key: s3.secret_key.clone(),
        };
        let storage = rt
            .block_on(GenericRemoteStorage::from_config_with(
                &config,
                0,
                Some(creds),
            ))
            .unwrap();
        Bucket { rt, storage }
    }

    fn keys(&self) -> Vec<String> {
        let listing = self
            .rt
            .block_on(
                self.storage
                    .list(Some("tenants/"), ListingMode::NoDelimiter),
            )
            .unwrap();
        listing.keys.iter().map(|o| o.key.to_string()).collect()
    }

    /// Flips one bit in the middle of the object; returns its original bytes.
    fn flip(&self, key: &str) -> Bytes {
        let path = RemotePath::new(key).unwrap();
        let original = self
            .rt
            .block_on(self.storage.download_bytes(&path, ByteRange::ALL))
            .unwrap();
        let mut bad = original.to_vec();
        let at = bad.len() / 2;
        bad[at] ^= 0x10;
        self.put(key, Bytes::from(bad));
        original
    }

    fn put(&self, key: &str, data: Bytes) {
        let path = RemotePath::new(key).unwrap();
        self.rt
            .block_on(self.storage.upload_bytes(data, &path))
            .unwrap();
    }
}

#[test]
fn list_dump_index_part_and_verify_of_a_workdir_and_a_bucket() {
    let s3 = S3Server::start();
    let table = s3.remote_storage("lc");
    let env = s3.env();
    let ps = Pageserver::start_with_env(&[&format!("remote_storage={table}")], env.clone());
    ps.create_tenant(T);
    ps.bootstrap(T, TL);
    ps.checkpoint(T, TL);
    let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    let dcl: Lsn = info["disk_consistent_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    ps.wait_remote(T, TL, dcl);
    let tl_dir = ps.workdir().join(format!("tenants/{T}/timelines/{TL}"));

    // list, the workdir: every layer the metadata names, resident, and the same as the layer files there.
    let (out, text) = layers(&["list", tl_dir.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    println!("{text}");
    let local = listed(&text);
    let mut files: Vec<String> = std::fs::read_dir(&tl_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.parse::<pageserver::repository::layers::LayerName>()
                .is_ok()
        })
        .collect();
    files.sort();
    let mut names: Vec<String> = local.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(names, files);
    assert!(local.iter().all(|(_, state)| state == "resident"), "{text}");
    assert!(
        text.contains(&format!("disk_consistent_lsn {dcl}")),
        "{text}"
    );

    // list, the bucket: the same layers, each uploaded with the size the index records.
    let remote_args = ["--remote-storage", &table, "--tenant", T, "--timeline", TL];
    let (out, text) = layers(&[&["list"][..], &remote_args].concat(), &env);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let remote = listed(&text);
    let mut remote_names: Vec<String> = remote.iter().map(|(n, _)| n.clone()).collect();
    remote_names.sort();
    assert_eq!(remote_names, names, "{text}");
    assert!(
        remote.iter().all(|(_, state)| state == "uploaded"),
        "{text}"
    );

    // index-part: the summary agrees with the API; --json is the index; a file of it shows the same.
    let (out, summary) = layers(&[&["index-part"][..], &remote_args].concat(), &env);
    assert!(out.status.success(), "{summary}{}", stderr(&out));
    println!("{summary}");
    assert!(
        summary.contains(&format!("disk_consistent_lsn   {dcl}")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("layers                {} (", names.len())),
        "{summary}"
    );
    let (out, json) = layers(
        &[&["index-part"][..], &remote_args, &["--json"]].concat(),
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        parsed["layer_metadata"].as_object().unwrap().len(),
        names.len()
    );
    // Written beside the layers, where the path tells the tool the timeline.
    let file = tl_dir.join("index_part.json");
    std::fs::write(&file, &json).unwrap();
    let (out, from_file) = layers(&["index-part", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let strip = |t: &str| t.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&from_file), strip(&summary));
    std::fs::remove_file(&file).unwrap();
    // A damaged index file is refused with its name.
    let bad = tl_dir.join("index_part.json");
    std::fs::write(&bad, json.replacen("\"version\": 1", "\"version\": 7", 1)).unwrap();
    let (out, _) = layers(&["index-part", bad.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unsupported version 7"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&bad).unwrap();

    // dump: one line per index entry, blocks contiguous up to the index; --values decodes each.
    let biggest = tl_dir.join(
        local
            .iter()
            .map(|(n, _)| n)
            .max_by_key(|n| std::fs::metadata(tl_dir.join(n)).unwrap().len())
            .unwrap(),
    );
    let (out, dump) = layers(&["dump", biggest.to_str().unwrap(), "--values"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    check_dump(&biggest, &dump);

    // verify, the bucket: everything checks out.
    let verify_args = ["verify", "--remote-storage", &table];
    let (out, text) = layers(&verify_args, &env);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    println!("{text}");
    let oks = text.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(oks > names.len(), "{text}");
    assert!(text.contains(", 0 damaged"), "{text}");

    // One flipped byte in a layer object: found, named, exit 1.
    let bucket = Bucket::open(&table, &s3);
    let keys = bucket.keys();
    let biggest_name = biggest.file_name().unwrap().to_str().unwrap();
    let layer_key = keys
        .iter()
        .find(|k| k.contains(biggest_name))
        .unwrap()
        .clone();
    let original = bucket.flip(&layer_key);
    let (out, text) = layers(&verify_args, &env);
    assert!(!out.status.success(), "{text}");
    let damaged: Vec<&str> = text.lines().filter(|l| l.starts_with("DAMAGED")).collect();
    assert_eq!(damaged.len(), 1, "{text}");
    assert!(damaged[0].contains(&layer_key), "{text}");
    assert!(damaged[0].contains("checksum"), "{text}");
    assert!(
        stderr(&out).contains("1 damaged object"),
        "{}",
        stderr(&out)
    );
    println!("{}", damaged[0]);
    bucket.put(&layer_key, original);

    // One flipped byte in the WAL archive's base: its sha256 no longer matches the manifest's.
    let base_key = keys
        .iter()
        .find(|k| k.contains("/wal/base.tar.zst"))
        .unwrap_or_else(|| panic!("no archive base among {keys:?}"))
        .clone();
    bucket.flip(&base_key);
    let (out, text) = layers(&verify_args, &env);
    assert!(!out.status.success(), "{text}");
    let damaged: Vec<&str> = text.lines().filter(|l| l.starts_with("DAMAGED")).collect();
    assert_eq!(damaged.len(), 1, "{text}");
    assert!(damaged[0].contains(&base_key), "{text}");
    assert!(damaged[0].contains("sha256"), "{text}");
    println!("{}", damaged[0]);
}

/// The dump's header agrees with the file, its index lines are numbered 0.. with contiguous blocks ending
/// where the index starts, and every value line describes a value.
fn check_dump(file: &Path, dump: &str) {
    let size = std::fs::metadata(file).unwrap().len();
    assert!(dump.contains(&format!("size      {size} bytes")), "{dump}");
    let index_line = dump.lines().find(|l| l.starts_with("index ")).unwrap();
    let words: Vec<&str> = index_line.split_whitespace().collect();
    let (entries, index_offset): (usize, u64) = (
        words[1].parse().unwrap(),
        words[5].trim_end_matches(',').parse().unwrap(),
    );
    let rows: Vec<Vec<&str>> = dump
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("entry"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), entries, "{index_line}");
    let mut next = rows[0][3].parse::<u64>().unwrap();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], i.to_string());
        assert_eq!(r[3].parse::<u64>().unwrap(), next, "entry {i}");
        next += r[4].parse::<u64>().unwrap();
        let value = r[5..].join(" ");
        assert!(!value.is_empty(), "entry {i} has no value");
    }
    assert_eq!(next, index_offset);
    let pages = dump.lines().filter(|l| l.contains("page lsn ")).count();
    assert!(pages > 0, "no page image in the dump of {}", file.display());
    println!("{}", dump.lines().take(12).collect::<Vec<_>>().join("\n"));
}
