use raylet::client::LocalClient;
use std::time::{Duration, Instant};
fn main() {
    let sock = std::env::args().nth(1).unwrap();
    let secs: u64 = std::env::args().nth(2).unwrap_or("5".into()).parse().unwrap();
    let mut c = LocalClient::connect_driver(std::path::Path::new(&sock)).unwrap();
    let mut id;
    loop { id = raylet::ids::ObjectId::random(); if raylet::shard::route::owner_of_object(&id, 2).index() == 0 { break; } }
    c.put_with_id(id, &[7u8; 1024]).unwrap();
    let t = Instant::now(); let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(secs) { let v = c.get(&[id], Some(Duration::ZERO)).unwrap(); assert!(v[0].is_some()); n += 1; }
    println!("{} gets/s, {:.2} us each", n / secs, secs as f64 * 1e6 / n as f64);
}
