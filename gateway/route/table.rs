//! The route table: service by longest segment-aligned prefix, then operation by path
//! template and method. Built once per snapshot; a lookup allocates only the parameter list.
//!
//! Both levels are segment tries keyed by *decoded* segments, so the table can only be asked
//! about a [`NormalPath`]; there is no way to route a raw, unnormalised path.

use std::collections::HashMap;

use http::Method;

use super::normalize::NormalPath;
use super::template::{Part, Template};

/// A successful lookup.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'p> {
    /// Index into `Snapshot::services`.
    pub service: usize,
    /// Index into that service's operations.
    pub operation: usize,
    /// How many leading segments the service prefix took; the upstream sees the rest.
    pub prefix_len: usize,
    /// Values of the template's parameters, in template order.
    pub params: Vec<&'p str>,
}

/// Why nothing matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No service prefix covers the path.
    NoService,
    /// The service exists; no operation's template matches the rest of the path.
    NoOperation { service: usize },
    /// A template matches, but not with this method.
    Method { service: usize, allow: Vec<Method> },
}

/// A template and method that collide with one already in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub existing_operation: usize,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    prefixes: PrefixNode,
    services: Vec<OperationNode>,
}

#[derive(Debug, Default)]
struct PrefixNode {
    children: HashMap<String, PrefixNode>,
    service: Option<usize>,
}

#[derive(Debug, Default)]
struct OperationNode {
    literals: HashMap<String, OperationNode>,
    param: Option<Box<OperationNode>>,
    methods: Vec<(Method, usize)>,
}

// === impl RouteTable ===

impl RouteTable {
    /// Registers a service under its prefix (already normalised); returns the service that
    /// already holds that prefix, if any.
    pub fn add_service(&mut self, service: usize, prefix: &NormalPath) -> Result<(), usize> {
        let mut node = &mut self.prefixes;
        for segment in prefix.segments() {
            node = node.children.entry(segment.clone()).or_default();
        }
        if let Some(existing) = node.service {
            return Err(existing);
        }
        node.service = Some(service);
        if self.services.len() <= service {
            self.services
                .resize_with(service + 1, OperationNode::default);
        }
        Ok(())
    }

    /// Registers an operation of a service added before.
    pub fn add_operation(
        &mut self,
        service: usize,
        operation: usize,
        method: Method,
        template: &Template,
    ) -> Result<(), Conflict> {
        if self.services.len() <= service {
            self.services
                .resize_with(service + 1, OperationNode::default);
        }
        let mut node = &mut self.services[service];
        for part in template.parts() {
            node = match part {
                Part::Literal(literal) => node.literals.entry(literal.clone()).or_default(),
                Part::Param(_) => node.param.get_or_insert_with(Default::default),
            };
        }
        if let Some((_, existing)) = node.methods.iter().find(|(m, _)| *m == method) {
            return Err(Conflict {
                existing_operation: *existing,
            });
        }
        node.methods.push((method, operation));
        Ok(())
    }

    /// Finds the operation for a method and a normalised path.
    ///
    /// `HEAD` is answered by a `GET` operation unless the service declares `HEAD` itself, as
    /// HTTP requires of every server that serves `GET`.
    pub fn lookup<'p>(&self, method: &Method, path: &'p NormalPath) -> Result<Matched<'p>, Miss> {
        let segments = path.segments();
        let mut node = &self.prefixes;
        let mut best = node.service.map(|s| (s, 0));
        for (depth, segment) in segments.iter().enumerate() {
            match node.children.get(segment.as_str()) {
                Some(child) => node = child,
                None => break,
            }
            if let Some(service) = node.service {
                best = Some((service, depth + 1));
            }
        }
        let (service, prefix_len) = best.ok_or(Miss::NoService)?;
        let rest = &segments[prefix_len..];
        let root = &self.services[service];
        let mut params = Vec::new();
        let mut allow = Vec::new();
        let found = find(root, rest, method, &mut params, &mut allow).or_else(|| {
            (*method == Method::HEAD)
                .then(|| find(root, rest, &Method::GET, &mut params, &mut Vec::new()))
                .flatten()
        });
        match found {
            Some(operation) => Ok(Matched {
                service,
                operation,
                prefix_len,
                params,
            }),
            None if allow.is_empty() => Err(Miss::NoOperation { service }),
            None => {
                if allow.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
                    allow.push(Method::HEAD);
                }
                Err(Miss::Method { service, allow })
            }
        }
    }
}

/// Depth-first search, literals before parameters, for a node that serves `method`. Every
/// terminal node passed on the way adds its methods to `allow`, for a 405's `Allow` header.
fn find<'p>(
    node: &OperationNode,
    rest: &'p [String],
    method: &Method,
    params: &mut Vec<&'p str>,
    allow: &mut Vec<Method>,
) -> Option<usize> {
    let Some((head, tail)) = rest.split_first() else {
        for (m, _) in &node.methods {
            if !allow.contains(m) {
                allow.push(m.clone());
            }
        }
        return node
            .methods
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, op)| *op);
    };
    if let Some(child) = node.literals.get(head.as_str()) {
        if let Some(op) = find(child, tail, method, params, allow) {
            return Some(op);
        }
    }
    if let Some(child) = &node.param {
        params.push(head.as_str());
        if let Some(op) = find(child, tail, method, params, allow) {
            return Some(op);
        }
        params.pop();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::normalize::normalize;
    use super::*;

    fn table() -> RouteTable {
        let mut t = RouteTable::default();
        t.add_service(0, &normalize("/dukcapil/penduduk").unwrap())
            .unwrap();
        t.add_service(1, &normalize("/dukcapil").unwrap()).unwrap();
        let ops = [
            (0, 0, Method::GET, "/penduduk/{nik}"),
            (0, 1, Method::POST, "/verifikasi"),
            (0, 2, Method::GET, "/penduduk/cari"),
            (0, 3, Method::PUT, "/penduduk/{id}/alamat"),
            (1, 0, Method::GET, "/"),
        ];
        for (s, o, m, p) in ops {
            t.add_operation(s, o, m, &Template::parse(p).unwrap())
                .unwrap();
        }
        t
    }

    fn get<'p>(t: &RouteTable, m: Method, p: &'p NormalPath) -> Result<Matched<'p>, Miss> {
        t.lookup(&m, p)
    }

    #[test]
    fn longest_prefix_then_template() {
        let t = table();
        let p = normalize("/dukcapil/penduduk/penduduk/3201").unwrap();
        let m = get(&t, Method::GET, &p).unwrap();
        assert_eq!((m.service, m.operation, m.prefix_len), (0, 0, 2));
        assert_eq!(m.params, ["3201"]);
        let p = normalize("/dukcapil/penduduk/penduduk/cari").unwrap();
        assert_eq!(get(&t, Method::GET, &p).unwrap().operation, 2);
        let p = normalize("/dukcapil").unwrap();
        assert_eq!(get(&t, Method::GET, &p).unwrap().service, 1);
        let p = normalize("/dukcapil/penduduk/penduduk/7/alamat").unwrap();
        assert_eq!(get(&t, Method::PUT, &p).unwrap().params, ["7"]);
    }

    #[test]
    fn prefixes_are_segment_aligned() {
        let t = table();
        let p = normalize("/dukcapilx/penduduk").unwrap();
        assert_eq!(get(&t, Method::GET, &p), Err(Miss::NoService));
        let p = normalize("/dukcapil/pendudukx/penduduk/1").unwrap();
        assert_eq!(
            get(&t, Method::GET, &p),
            Err(Miss::NoOperation { service: 1 })
        );
    }

    #[test]
    fn method_mismatch_lists_allowed_methods() {
        let t = table();
        let p = normalize("/dukcapil/penduduk/penduduk/1").unwrap();
        assert_eq!(
            get(&t, Method::DELETE, &p),
            Err(Miss::Method {
                service: 0,
                allow: vec![Method::GET, Method::HEAD]
            })
        );
        assert_eq!(get(&t, Method::HEAD, &p).unwrap().operation, 0);
        let p = normalize("/dukcapil/penduduk/verifikasi").unwrap();
        assert!(matches!(
            get(&t, Method::GET, &p),
            Err(Miss::Method { allow, .. }) if allow == vec![Method::POST]
        ));
    }

    #[test]
    fn literal_miss_backtracks_to_parameter() {
        let mut t = RouteTable::default();
        t.add_service(0, &normalize("/s").unwrap()).unwrap();
        let a = Template::parse("/a/x/y").unwrap();
        let b = Template::parse("/a/{p}/z").unwrap();
        t.add_operation(0, 0, Method::GET, &a).unwrap();
        t.add_operation(0, 1, Method::GET, &b).unwrap();
        let p = normalize("/s/a/x/z").unwrap();
        let m = t.lookup(&Method::GET, &p).unwrap();
        assert_eq!((m.operation, m.params), (1, vec!["x"]));
    }

    #[test]
    fn conflicts_are_reported() {
        let mut t = RouteTable::default();
        assert_eq!(t.add_service(0, &normalize("/s").unwrap()), Ok(()));
        assert_eq!(t.add_service(1, &normalize("/s/").unwrap()), Err(0));
        let a = Template::parse("/p/{a}").unwrap();
        let b = Template::parse("/p/{b}").unwrap();
        t.add_operation(0, 0, Method::GET, &a).unwrap();
        assert_eq!(
            t.add_operation(0, 1, Method::GET, &b),
            Err(Conflict {
                existing_operation: 0
            })
        );
        assert_eq!(t.add_operation(0, 1, Method::POST, &b), Ok(()));
    }
}
