import './base.css';
import './panel.css';
import './views.css';
