// Loads each provider plugin: random, docker (a network in the local engine), kubernetes
// (rendered to a directory, no cluster needed).
import * as docker from '@pulumi/docker';
import * as k8s from '@pulumi/kubernetes';
import * as pulumi from '@pulumi/pulumi';
import * as random from '@pulumi/random';

const config = new pulumi.Config();
const password = new random.RandomPassword('smoke-password', { length: 24, special: false });
const network = new docker.Network('smoke-network', { name: config.require('networkName'), labels: [{ label: 'agentd.smoke', value: '1' }] });
const provider = new k8s.Provider('smoke-render', { renderYamlToDirectory: config.require('renderDir') });
new k8s.core.v1.ConfigMap('smoke-config', { metadata: { name: 'smoke' }, data: { hello: 'world' } }, { provider });

export const passwordLength = password.result.apply((r) => r.length);
export const networkName = network.name;
