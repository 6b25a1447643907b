#![allow(dead_code)]

//! nginx (Debian's nginx-light) on 127.0.0.1 as a web seed: its own
//! configuration in the test's scratch folder (no system configuration,
//! pid file, log or temp folder is used), in the foreground
//! (`daemon off`, `master_process off`) as a child process killed on drop.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::harness::{free_port, tail, Proc, Swarm};

/// A running nginx serving one folder.
pub struct Nginx {
    pub port: u16,
    pub access_log: PathBuf,
    _proc: Proc,
}

impl Nginx {
    /// Serves `root` on 127.0.0.1 (at most `rate` bytes/s per connection
    /// when given), configured and logged under `sw`'s scratch folder.
    pub fn start(sw: &mut Swarm, root: &Path, rate: Option<&str>) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("interop: nginx is missing: install nginx-light (.ci/run does)")
            });
        let dir = sw.subdir("nginx");
        let port = free_port();
        let d = dir.display();
        let limit = rate.map_or(String::new(), |r| format!("limit_rate {r};"));
        let conf = format!(
            "daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
                 access_log {d}/access.log;\n\
                 client_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n\
                 sendfile on;\n\
                 default_type application/octet-stream;\n\
                 server {{\n\
                     listen 127.0.0.1:{port};\n\
                     root {};\n\
                     {limit}\n\
                 }}\n\
             }}\n",
            root.display()
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).expect("interop: write nginx.conf");
        let mut cmd = Command::new(nginx);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"));
        let mut proc = sw.spawn("nginx", &mut cmd);
        let start = Instant::now();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(st) = proc.exited() {
                panic!(
                    "interop: nginx exited ({st}):\n{}\n{}",
                    tail(&proc.log),
                    tail(&dir.join("error.log"))
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "interop: nginx not listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            port,
            access_log: dir.join("access.log"),
            _proc: proc,
        }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Requests logged whose path contains `part`.
    pub fn requests_for(&self, part: &str) -> usize {
        fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(part))
            .count()
    }
}
