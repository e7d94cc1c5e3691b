# A FROM-scratch runtime image: the build context's rootfs/ holds a binary, the libraries `ldd`
# lists for it, the CA bundle and agentd-healthcheck (scripts/images.ts lays it out). No shell,
# no package manager; the workload's command comes from the Pulumi Docker target.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin
USER 10001:10001
