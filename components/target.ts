// What the Platform needs from a target: its capabilities (what the plan is made for), and one
// call that deploys the whole plan, every workload and the network between them.
// components/targets/* implement it.
import type * as pulumi from '@pulumi/pulumi';
import type { Connection, TargetCapabilities } from './render/types.ts';
import type { Workload } from './workload.ts';

export interface DeployedWorkload {
  /** The resource that exists once the workload runs (for dependsOn). */
  readonly resource: pulumi.Resource;
  /** The content hash the target labelled it with. */
  readonly hash: pulumi.Output<string>;
  /**
   * For a published workload: `host:port` where clients reach its published port (Docker: the
   * bound host address; Kubernetes: the load balancer's address once assigned, else the
   * Service's cluster DNS name).
   */
  readonly endpoint?: pulumi.Output<string>;
  /** Kubernetes NodePort exposure: the node port the cluster assigned to the published port. */
  readonly nodePort?: pulumi.Output<number>;
}

/** Where a workload's resources go in the resource tree: their parent and the base of their names (both part of their URNs). */
export interface Placement {
  readonly parent: pulumi.Resource;
  readonly baseName: string;
}

export interface Target {
  /** What the plan needs to know about this target (pure data: addresses, log discovery, what it can do). */
  readonly capabilities: TargetCapabilities;
  /**
   * Deploys the whole platform: every workload, as children of its placement, and the network:
   * `network` lists every allowed connection, and nothing else may connect where the target can
   * enforce it. Returns each workload's deployment by name.
   */
  deploy(workloads: readonly Workload[], network: readonly Connection[], place: (workload: string) => Placement): Readonly<Record<string, DeployedWorkload>>;
}
