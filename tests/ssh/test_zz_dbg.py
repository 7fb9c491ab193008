import threading, time
from clusterctl import Cluster
from sshbed import clusterctl_processes

HOSTS = "h1 slots=2\nh2 slots=2\n"

def test_dbg(env, ssh_clusters, ssh_bed):
    clusters = [ssh_clusters.cluster(HOSTS) for _ in range(4)]
    pids = []
    threads = [threading.Thread(target=lambda c=c: pids.append(c.rpc("h1", "os.getppid"))) for c in clusters]
    for t in threads: t.start()
    for t in threads: t.join()
    print("PIDS", pids)
    print("BEFORE", clusterctl_processes(ssh_bed, "h1"))
    for c in clusters: c.close()
    path = ssh_clusters.made[0][1]
    with Cluster(path, ssh_options=clusters[0].ssh_options, connect_timeout=10) as closer:
        print("DOWN", closer.down())
    time.sleep(1)
    print("AFTER", clusterctl_processes(ssh_bed, "h1"))
    log = ssh_bed.host("h1").env_dir / "run" / "clusterctl" / "h1.log"
    print("LOG", log.read_text()[-3000:] if log.exists() else "no log")
    hublog = env.run_dir / "hub" / "hub.log"
    print("HUBLOG", hublog.read_text()[-2000:] if hublog.exists() else "none")
