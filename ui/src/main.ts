/**
 * Entry point of harpbridge's panel. AppAPI's embedded page
 * (`/apps/app_api/embedded/harpbridge/<menu>`) is `<div id="content"></div>` plus this
 * script and `css/harpbridge-main.css`; the panel mounts there and reads its settings
 * from the initial state `loadState('app_api', 'harpbridge-config')`.
 */
import { createApp } from 'vue'
import App from './App.vue'
import './panel.css'
import { PanelClient, readConfig } from './client'

const client = new PanelClient(readConfig())
const app = createApp(App, { client })
app.mount('#content')
client.start()
