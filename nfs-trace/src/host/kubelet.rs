//! Which Kubernetes pod a mount serves, from where kubelet mounted it.
//!
//! Kubelet mounts a pod's volumes under its root dir (default
//! /var/lib/kubelet; k0s, microk8s and others move it) at
//! `<root>/pods/<pod-uid>/volumes/<plugin>/<volume>` — an in-tree NFS volume
//! at `…/volumes/kubernetes.io~nfs/<volume>`, a CSI one at
//! `…/volumes/kubernetes.io~csi/<pv>/mount` — and a subPath at
//! `<root>/pods/<pod-uid>/volume-subpaths/<volume>/<container>/<n>`. A CSI
//! driver's staging mount (`…/plugins/kubernetes.io/csi/…/globalmount`) is
//! the same superblock bind-mounted into each pod, so a mount's pods are
//! read from every place it is seen.
use serde::{Deserialize, Serialize};

use crate::host::nfsmounts::MountView;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodVolume {
    /// The pod's UID (`kubectl get pod -o jsonpath='{.metadata.uid}'`).
    pub uid: String,
    /// The volume's name in the pod spec (for CSI: the volume kubelet
    /// names the directory after, usually the PV).
    pub volume: String,
}

/// A pod UID as kubelet writes it: 36 characters, hex and hyphens at 8-4-4-4-12.
fn is_uid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

/// The pod and volume a kubelet mount point belongs to, if it is one.
pub fn pod_volume(path: &str) -> Option<PodVolume> {
    let (_, rest) = path.split_once("/pods/")?;
    let mut parts = rest.split('/');
    let uid = parts.next().filter(|u| is_uid(u))?;
    let volume = match parts.next()? {
        // volumes/<plugin>/<volume>[/mount]
        "volumes" => {
            parts.next()?;
            parts.next()?
        }
        // volume-subpaths/<volume>/<container>/<n>
        "volume-subpaths" => parts.next()?,
        _ => return None,
    };
    (!volume.is_empty()).then(|| PodVolume { uid: uid.to_string(), volume: volume.to_string() })
}

/// Every pod volume a mount is seen as, sorted, without repeats.
pub fn pods_of(v: &MountView) -> Vec<PodVolume> {
    let mut p: Vec<PodVolume> =
        std::iter::once(v.mountpoint.as_str()).chain(v.seen_in.iter().map(|s| s.mountpoint.as_str())).filter_map(pod_volume).collect();
    p.sort();
    p.dedup();
    p
}

/// The pods of several mounts (a transport's), sorted, without repeats.
pub fn pods_of_all<'a>(views: impl IntoIterator<Item = &'a MountView>) -> Vec<PodVolume> {
    let mut p: Vec<PodVolume> = views.into_iter().flat_map(|v| v.pods.iter().cloned()).collect();
    p.sort();
    p.dedup();
    p
}

/// The pods named by mount point paths alone (records that carry only them).
pub fn pods_of_paths(paths: &[String]) -> Vec<PodVolume> {
    let mut p: Vec<PodVolume> = paths.iter().filter_map(|m| pod_volume(m)).collect();
    p.sort();
    p.dedup();
    p
}

/// A mount as human lines name it: its mount point, and its pod when it
/// is a pod's volume (`/var/lib/kubelet/… [pod UID volume NAME]`).
pub fn mount_label(m: &MountView) -> String {
    match describe(&m.pods) {
        Some(d) => format!("{} [{d}]", m.mountpoint),
        None => m.mountpoint.clone(),
    }
}

/// `pod UID volume NAME` (and how many more), for human lines.
pub fn describe(pods: &[PodVolume]) -> Option<String> {
    let first = pods.first()?;
    let more = if pods.len() > 1 { format!(" (+{} more)", pods.len() - 1) } else { String::new() };
    Some(format!("pod {} volume {}{more}", first.uid, first.volume))
}

/// `UID/VOLUME,…` for a metrics label ("" when none).
pub fn label(pods: &[PodVolume]) -> String {
    pods.iter().map(|p| format!("{}/{}", p.uid, p.volume)).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8f0c2b1e-3a4d-4c5e-9f60-7a8b9c0d1e2f";

    #[test]
    fn kubelet_paths_name_their_pod_and_volume() {
        let want = |v: &str| Some(PodVolume { uid: UID.into(), volume: v.into() });
        assert_eq!(pod_volume(&format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~nfs/shared")), want("shared"));
        assert_eq!(pod_volume(&format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/pvc-123/mount")), want("pvc-123"));
        assert_eq!(pod_volume(&format!("/var/lib/k0s/kubelet/pods/{UID}/volume-subpaths/data/app/0")), want("data"));
        for not in [
            "/mnt/data".to_string(),
            "/var/lib/kubelet/plugins/kubernetes.io/csi/efs.csi.aws.com/abc/globalmount".into(),
            "/var/lib/kubelet/pods/not-a-uid/volumes/kubernetes.io~nfs/x".into(),
            format!("/var/lib/kubelet/pods/{UID}/etc-hosts"),
            format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~nfs"),
        ] {
            assert_eq!(pod_volume(&not), None, "{not}");
        }
    }

    #[test]
    fn a_staging_mount_bound_into_pods_names_each_pod_once() {
        let mut v = MountView::for_test("/var/lib/kubelet/plugins/kubernetes.io/csi/efs/abc/globalmount", "10.0.0.5", "4.1", false, 0);
        let other = "0a1b2c3d-0000-4000-8000-000000000001";
        for p in [format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/pv1/mount"), format!("/var/lib/kubelet/pods/{other}/volumes/kubernetes.io~csi/pv1/mount")] {
            v.seen_in.push(crate::host::nfsmounts::SeenIn { mntns: None, mountpoint: p.clone(), pid: None });
            v.seen_in.push(crate::host::nfsmounts::SeenIn { mntns: Some(7), mountpoint: p, pid: Some(9) });
        }
        let p = pods_of(&v);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(describe(&p).unwrap(), format!("pod {other} volume pv1 (+1 more)"));
        assert_eq!(label(&p), format!("{other}/pv1,{UID}/pv1"));
        assert_eq!(describe(&[]), None);
    }
}
