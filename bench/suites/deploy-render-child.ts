// One cold render in a fresh process: `node deploy-render-child.ts <keys> <services>` prints
// {parseMs, renderMs, renderCpuMs, bytes} as JSON. The first renderPlatform call is what a deploy pays.
import { renderPlatform } from '../../components/render/platform.ts';
import { syntheticPolicy } from '../lib/synthetic.ts';
import { renderInput, renderedSizes } from './deploy.ts';

const keys = Number(process.argv[2] ?? 1000);
const services = Number(process.argv[3] ?? 100);
const t0 = performance.now();
const policy = syntheticPolicy({ clients: keys, services });
const parseMs = performance.now() - t0;
const input = renderInput(policy);
const c1 = process.cpuUsage();
const t1 = performance.now();
const rendered = renderPlatform(policy.spec, input);
const renderMs = performance.now() - t1;
const cpu = process.cpuUsage(c1);
process.stdout.write(JSON.stringify({ parseMs, renderMs, renderCpuMs: (cpu.user + cpu.system) / 1000, bytes: renderedSizes(rendered) }));
