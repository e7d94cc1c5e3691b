// autocannon ships no types (and @types/autocannon is not installed); the bench uses only this.
declare module 'autocannon' {
  function autocannon(options: Record<string, unknown>): Promise<Record<string, unknown>>;
  export default autocannon;
}
