import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="none" stroke="#616161" stroke-width="2" d="M6 6.5L18 12M6 17.5L18 12"/>
  <circle class="jp-icon3" fill="#616161" cx="5" cy="6" r="3"/>
  <circle class="jp-icon3" fill="#616161" cx="5" cy="18" r="3"/>
  <circle class="jp-icon-brand0 jp-icon3" fill="#616161" cx="19" cy="12" r="3.5"/>
</svg>`;

/** The dsops glyph: two steps flowing into a third. */
export const dsopsIcon = new LabIcon({ name: 'dsops-jupyter:pipeline', svgstr: svg });
