/**
 * A replica's identity in the leases (docs/architecture.md, "Runtime"). `replicaId` is stable
 * across restarts (config `replicaId`, default the hostname — the pod name in
 * Kubernetes); the owner string adds the process id and a random suffix, so
 * two live processes never share one. A restarted replica (after kill -9, an
 * OOM kill, a container restart) finds its leases held by its previous
 * incarnation: same replicaId, and that process is gone — the same pid
 * number is ours now (a restarted container starts at the same pid), or no
 * process with that pid exists on this host. It takes those leases at once
 * instead of waiting out `delivery.leaseMs`. A lease held by another replica
 * (another replicaId) or by a live process is still waited out.
 */
import { randomBytes } from 'node:crypto';

export interface ReplicaIdentity {
  readonly replicaId: string;
  /** the lease owner and consumer name of this process */
  readonly owner: string;
  /** true when `holder` is a dead earlier incarnation of this replica */
  reclaim(holder: string): boolean;
}

const OWNER = /^(.+)#(\d+)#[0-9a-f]+$/;

export function replicaIdentity(replicaId: string, pid: number = process.pid, isAlive: (pid: number) => boolean = processExists): ReplicaIdentity {
  const owner = `${replicaId}#${pid}#${randomBytes(4).toString('hex')}`;
  return {
    replicaId,
    owner,
    reclaim(holder) {
      const match = OWNER.exec(holder);
      if (!match || match[1] !== replicaId || holder === owner) return false;
      const holderPid = Number(match[2]);
      return holderPid === pid || !isAlive(holderPid);
    },
  };
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, as another user
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
