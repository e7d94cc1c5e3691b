// What a component needs from a target: where a workload is reachable by the others, and a way
// to turn a workload into resources. components/targets/* implement it.
import type * as pulumi from '@pulumi/pulumi';
import type { Endpoint } from './render/envoy/common.ts';
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

export interface Target {
  readonly kind: 'docker' | 'kubernetes';
  /** How other workloads reach `workload` on `port` (Docker DNS name, Kubernetes service DNS). */
  address(workload: string, port: number): Endpoint;
  /** Creates the workload's resources as children of `parent`, named from `baseName`. */
  deploy(w: Workload, parent: pulumi.Resource, baseName: string, dependsOn?: pulumi.Resource[]): DeployedWorkload;
  /** Called once every workload is deployed: what depends on all of them (NetworkPolicies). */
  connect?(): void;
}
